"""Rules of the codebase that a test can hold: no module reaches into another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

STUDIO = Path(__file__).resolve().parents[1] / "studio"


def test_no_module_imports_another_modules_private_names():
    found = []
    for path in sorted(STUDIO.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module is not None
                or (isinstance(node, ast.ImportFrom) and node.level)
            ):
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private and node.level:  # within the studio package
                    found.append(f"{path.relative_to(STUDIO)}: {', '.join(private)}")
    assert found == [], found


# Functions still longer than the rule allows, with the length they may not grow past: the
# list may only shrink (issue 15 splits the tab builders into module-level handlers).
LONG_FUNCTIONS: dict[str, int] = {}
MAX_LINES = 80


def test_no_function_is_longer_than_80_lines_except_the_listed_ones_which_do_not_grow():
    found = {}
    for path in sorted(STUDIO.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    found[f"{path.relative_to(STUDIO).as_posix()}:{node.name}"] = lines
    too_long = {k: v for k, v in found.items() if v > LONG_FUNCTIONS.get(k, MAX_LINES)}
    assert too_long == {}, f"split these functions: {too_long}"
    fixed = sorted(set(LONG_FUNCTIONS) - set(found))
    assert fixed == [], f"now short enough: remove {fixed} from LONG_FUNCTIONS"


# What each package may import (its __init__ docstring says the same): a run goes through data,
# models, inspection, training, deployment, then compress (a variant is measured as deployed); the top-level foundations are open to all, and
# only the CLI, the jobs and the app may import anything.
LAYERS = {
    "data": set(),
    "models": {"data"},
    "inspection": {"data", "models"},
    "training": {"data", "models", "inspection"},
    "deployment": {"data", "models", "inspection"},
    "compress": {"data", "models", "inspection", "training", "deployment"},
    "domain": {"data", "models", "inspection", "training"},
    "transfer": {"data", "models", "inspection", "training", "domain"},
}
PACKAGES = set(LAYERS)


def _imported_packages(path: Path) -> set[str]:
    """The studio packages a module imports (relative imports resolved from its place)."""
    package = path.relative_to(STUDIO).parent.parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(package[: len(package) - (node.level - 1)])
            target = base + (node.module.split(".") if node.module else [])
            names = [target] if node.module else [target + [a.name] for a in node.names]
            found |= {t[0] for t in names if t and t[0] in PACKAGES}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("studio."):
            found.add(node.module.split(".")[1])
    return found & PACKAGES


def test_each_package_imports_only_the_layers_below_it():
    wrong = []
    for name, allowed in LAYERS.items():
        for path in sorted((STUDIO / name).rglob("*.py")):
            extra = _imported_packages(path) - allowed - {name}
            if extra:
                wrong.append(f"{path.relative_to(STUDIO)} imports {sorted(extra)}")
    assert wrong == [], wrong


def test_every_engine_package_has_its_place_in_the_layers():
    packages = {p.parent.name for p in STUDIO.glob("*/__init__.py")} - {"ui"}
    assert packages == set(LAYERS), "give a new package its place in LAYERS"


def test_the_rule_sees_an_import_that_breaks_it(tmp_path, monkeypatch):
    fake = tmp_path / "studio"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "x.py").write_text("from ..training.train import train\n")
    monkeypatch.setitem(globals(), "STUDIO", fake)
    assert _imported_packages(fake / "data" / "x.py") == {"training"}
