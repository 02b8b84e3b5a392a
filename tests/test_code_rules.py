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
