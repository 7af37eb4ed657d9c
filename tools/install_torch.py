"""Install the right PyTorch build for this machine into the running Python (`make`).

    python tools/install_torch.py [auto | PIP-ARGS...]

``auto`` (the default) chooses:
* a torch that is already installed is kept (nothing is downloaded);
* a machine with an NVIDIA GPU (``nvidia-smi -L`` lists one) gets the package index's
  default Linux build, which is the CUDA build;
* macOS and Windows get the index's default build (CPU, plus MPS on Apple Silicon);
* any other Linux machine gets the CPU build: a wheel already on this machine if pip's
  configuration offers one (offline machines), else PyTorch's CPU wheel index — never the
  several GB of CUDA packages that a plain ``pip install torch`` would bring.

Anything else is passed to ``pip install`` as it is, e.g.
``torch --index-url https://download.pytorch.org/whl/cu126`` for a specific CUDA version.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
REQUIREMENT = "torch>=2.1"


def _pip(*args: str, quiet: bool = True) -> int:
    cmd = [sys.executable, "-m", "pip", "install", *(["-q"] if quiet else []), *args]
    return subprocess.call(cmd)


def _installed() -> str | None:
    probe = "import torch; print(torch.__version__)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def has_nvidia_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def install_auto() -> int:
    version = _installed()
    if version is not None:
        print(f"PyTorch {version} is already installed (make TORCH=... to change it).")
        return 0
    if has_nvidia_gpu():
        print("NVIDIA GPU found: installing PyTorch's CUDA build (a few GB).")
        return _pip(REQUIREMENT)
    if platform.system() != "Linux":
        print(f"Installing PyTorch for {platform.system()} (CPU; MPS on Apple Silicon).")
        return _pip(REQUIREMENT)
    print("No NVIDIA GPU: installing PyTorch's CPU build.")
    # 1. a wheel this machine already has (pip's find-links): works offline.
    local = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index",
                            "--no-deps", "torch"], capture_output=True, text=True)
    if local.returncode != 0:
        # 2. PyTorch's CPU index for torch itself; its dependencies from the usual index.
        code = _pip("--no-deps", "--index-url", CPU_INDEX, "torch")
        if code != 0:
            print("Could not install PyTorch. Install it by hand (see pytorch.org), then "
                  "run make again.", file=sys.stderr)
            return code
    return _pip(REQUIREMENT)  # torch's own dependencies; torch itself is satisfied


def main(argv: list[str]) -> int:
    if not argv or argv == ["auto"]:
        return install_auto()
    return _pip(*argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
