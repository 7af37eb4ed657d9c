"""Every setting stembridge reads from the environment, in one place, read at call time.

Nothing here is evaluated at import: each function looks at ``os.environ`` when it is
called, so a test (or a long-lived server) that changes a variable sees the change. CLI
flags override these; these override the built-in defaults below. PROTOCOL.md
("Environment") lists the same table.

| variable | meaning | default |
|---|---|---|
| ``STEMBRIDGE_CACHE_DIR`` | per-user cache root | ``$XDG_CACHE_HOME/stembridge`` or ``~/.cache/stembridge`` |
| ``STEMBRIDGE_RUNTIME_DIR`` | discovery records of running servers | ``$XDG_RUNTIME_DIR/stembridge``, else ``<cache>/run`` |
| ``STEMBRIDGE_MODELS_DIR`` | model weights | ``<cache>/models`` |
| ``STEMBRIDGE_OUTPUT_ROOT`` | the server's job folders | ``<cache>/jobs`` |
| ``STEMBRIDGE_HOST`` / ``STEMBRIDGE_PORT`` | where clients look for, and servers bind, the server | 127.0.0.1 / 47800 |
| ``STEMBRIDGE_TOKEN`` | access token clients send and servers require | none |
| ``STEMBRIDGE_TOKEN_FILE`` | a file whose first line is the token (not shown by ``ps``) | none |
| ``STEMBRIDGE_DEVICE`` / ``STEMBRIDGE_PRECISION`` | compute device and precision | auto / auto |
| ``STEMBRIDGE_MAX_SECONDS`` | longest input accepted, seconds | 10800 (3 h) |
| ``STEMBRIDGE_MAX_SOURCE_MB`` | largest source file accepted, MiB | 16384 |
| ``STEMBRIDGE_READ_TIMEOUT`` | seconds a source may take to be read or decoded | 600 |
| ``STEMBRIDGE_CACHE_MAX_MB`` | size budget of the results cache, MiB (0: unbounded) | 20480 |
| ``STEMBRIDGE_JOBS_MAX_MB`` | size budget of finished job folders, MiB (0: unbounded) | 20480 |
| ``STEMBRIDGE_MODEL_MEMORY_MB`` | budget for warm models, MB (0: automatic) | 0 |
| ``STEMBRIDGE_OFFLINE`` (or ``HF_HUB_OFFLINE``) | never try to download | off |
| ``STEMBRIDGE_MODELS_MIRROR`` | base URL serving ``<model>/<file>`` instead of each file's origin | none |
| ``STEMBRIDGE_COMPILE`` | ``on``: the server compiles models' forwards in the background (``onnx``: through onnxruntime, fp32; ``graphs``: CUDA graphs, CUDA only) | off |
"""

from __future__ import annotations

import os
from pathlib import Path

#: The server's default UDP port on 127.0.0.1.
DEFAULT_PORT = 47800
#: The preview player's default control port on 127.0.0.1.
DEFAULT_PREVIEW_PORT = 47810
#: The default bind and connect address: loopback only.
DEFAULT_HOST = "127.0.0.1"
#: Longest input accepted by default, seconds (3 hours).
DEFAULT_MAX_SECONDS = 3 * 3600.0
#: Highest input sample rate accepted, Hz (the highest rate of common audio hardware).
MAX_SAMPLERATE = 384_000

#: Every variable this module reads, with what it means (for docs and `--help`).
VARIABLES: dict[str, str] = {
    "STEMBRIDGE_CACHE_DIR": "per-user cache root",
    "STEMBRIDGE_RUNTIME_DIR": "discovery records of running servers",
    "STEMBRIDGE_MODELS_DIR": "model weights",
    "STEMBRIDGE_OUTPUT_ROOT": "the server's job folders",
    "STEMBRIDGE_HOST": "server address for clients and servers",
    "STEMBRIDGE_PORT": "server UDP port for clients and servers",
    "STEMBRIDGE_TOKEN": "access token",
    "STEMBRIDGE_TOKEN_FILE": "file whose first line is the access token",
    "STEMBRIDGE_DEVICE": "compute device (auto, cpu, cuda, cuda:N, mps)",
    "STEMBRIDGE_PRECISION": "compute precision (auto, fp32, bf16, fp16)",
    "STEMBRIDGE_MAX_SECONDS": "longest input accepted, seconds",
    "STEMBRIDGE_MAX_SOURCE_MB": "largest source file accepted, MiB",
    "STEMBRIDGE_READ_TIMEOUT": "seconds a source may take to be read or decoded",
    "STEMBRIDGE_CACHE_MAX_MB": "size budget of the results cache, MiB (0: unbounded)",
    "STEMBRIDGE_JOBS_MAX_MB": "size budget of finished job folders, MiB (0: unbounded)",
    "STEMBRIDGE_MODEL_MEMORY_MB": "budget for warm models, MB (0: automatic)",
    "STEMBRIDGE_OFFLINE": "1: never try to download",
    "STEMBRIDGE_MODELS_MIRROR": "base URL serving <model>/<file> instead of each file's origin",
    "STEMBRIDGE_COMPILE": ("on: the server compiles models' forwards in the background "
                           "(onnx: through onnxruntime, fp32; graphs: CUDA graphs, "
                           "CUDA only)"),
}


class SettingError(ValueError):
    """An environment variable holds a value that cannot be used."""


def get(name: str, default: str | None = None) -> str | None:
    """The variable's value, or `default` when it is unset or empty."""
    value = os.environ.get(name, "")
    return value if value.strip() else default


def get_float(name: str, default: float) -> float:
    value = get(name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise SettingError(f"{name}={value!r} is not a number; unset it or give a number."
                           ) from None


def get_int(name: str, default: int) -> int:
    value = get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise SettingError(f"{name}={value!r} is not an integer; unset it or give one."
                           ) from None


def get_flag(*names: str) -> bool:
    """True when any of the variables is set to 1/true/yes/on."""
    return any((get(n) or "").strip().lower() in ("1", "true", "yes", "on") for n in names)


def compile_enabled() -> bool:
    """True when ``STEMBRIDGE_COMPILE`` is on/1/yes/true: compiled forwards are built
    (off by default: a build takes minutes of CPU for a modest gain on a CPU so far, see
    bench/bench_engine.py ``--paths compiled``)."""
    return compile_backend() is not None


def compile_backend() -> str | None:
    """What builds compiled forwards: "inductor" (``STEMBRIDGE_COMPILE`` on/1/yes/true:
    torch.compile), "onnx" (``STEMBRIDGE_COMPILE=onnx``: onnxruntime, fp32 only),
    "graphs" (``STEMBRIDGE_COMPILE=graphs``: CUDA graphs, on a CUDA device only), or
    None (unset or anything else: eager)."""
    value = (get("STEMBRIDGE_COMPILE") or "").strip().lower()
    if value in ("onnx", "graphs"):
        return value
    return "inductor" if get_flag("STEMBRIDGE_COMPILE") else None


def cache_root() -> Path:
    """``$STEMBRIDGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/stembridge`` or
    ``~/.cache/stembridge`` (``%LOCALAPPDATA%\\stembridge\\cache`` on Windows)."""
    env = get("STEMBRIDGE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    if os.name == "nt" and get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "stembridge" / "cache"
    base = get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "stembridge"


def runtime_dir() -> Path:
    env = get("STEMBRIDGE_RUNTIME_DIR")
    if env:
        return Path(env).expanduser()
    xdg = get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "stembridge"
    return cache_root() / "run"


def models_dir() -> Path:
    env = get("STEMBRIDGE_MODELS_DIR")
    return Path(env).expanduser() if env else cache_root() / "models"


def output_root() -> Path:
    env = get("STEMBRIDGE_OUTPUT_ROOT")
    return Path(env).expanduser() if env else cache_root() / "jobs"


def host() -> str:
    return get("STEMBRIDGE_HOST", DEFAULT_HOST) or DEFAULT_HOST


def port() -> int:
    return get_int("STEMBRIDGE_PORT", DEFAULT_PORT)


#: Largest token file read, bytes.
MAX_TOKEN_FILE_BYTES = 4096


def token() -> str | None:
    """``$STEMBRIDGE_TOKEN``, else the first line of ``$STEMBRIDGE_TOKEN_FILE``."""
    value = get("STEMBRIDGE_TOKEN")
    path = get("STEMBRIDGE_TOKEN_FILE")
    return value if value is not None or path is None else read_token_file(Path(path))


def read_token_file(path: Path) -> str:
    """The first line of the regular file `path` (at most `MAX_TOKEN_FILE_BYTES`)."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise SettingError(f"Cannot read the token file {path}: {exc.strerror}.") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SettingError(f"The token file {path} is not a regular file.")
        data = fh.read(MAX_TOKEN_FILE_BYTES + 1)
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise SettingError(f"The token file {path} is larger than {MAX_TOKEN_FILE_BYTES} "
                           "bytes; it should hold only the token.")
    first = data.decode("utf-8", "replace").splitlines()[:1]
    if not first or not first[0].strip():
        raise SettingError(f"The token file {path} is empty; write the token into it.")
    return first[0].strip()


def device() -> str:
    return get("STEMBRIDGE_DEVICE", "auto") or "auto"


def precision() -> str:
    return get("STEMBRIDGE_PRECISION", "auto") or "auto"


def max_seconds() -> float:
    return get_float("STEMBRIDGE_MAX_SECONDS", DEFAULT_MAX_SECONDS)


def max_source_bytes() -> int:
    return int(get_float("STEMBRIDGE_MAX_SOURCE_MB", 16384.0) * 2**20)


def read_timeout() -> float:
    return get_float("STEMBRIDGE_READ_TIMEOUT", 600.0)


def cache_max_bytes() -> int:
    return int(get_float("STEMBRIDGE_CACHE_MAX_MB", 20480.0) * 2**20)


def jobs_max_bytes() -> int:
    return int(get_float("STEMBRIDGE_JOBS_MAX_MB", 20480.0) * 2**20)


def model_memory_mb() -> float:
    return get_float("STEMBRIDGE_MODEL_MEMORY_MB", 0.0)


def offline() -> bool:
    return get_flag("STEMBRIDGE_OFFLINE", "HF_HUB_OFFLINE")


def models_mirror() -> str | None:
    """A base URL that serves ``<model>/<file>`` for the MDX-Net and RoFormer files
    (a local mirror), instead of each file's own URL."""
    value = get("STEMBRIDGE_MODELS_MIRROR")
    return value.rstrip("/") if value else None


def hf_hub_cache() -> Path:
    """Hugging Face's hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``~/.cache/huggingface/hub``), where other tools' downloads of the same weights land."""
    home = get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    return Path(get("HF_HUB_CACHE") or Path(home) / "hub")
