"""Choosing where and in what precision the models run.

``auto`` device: CUDA if present, else Apple's MPS, else the CPU. ``auto`` precision:
bf16 autocast on a GPU that supports it (fp16 otherwise), bf16 on a CPU with native bf16
instructions (AVX512-BF16 or AMX), fp32 elsewhere.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING

from engine.errors import DeviceError, InvalidArgumentError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def select_device(name: str = "auto") -> torch.device:
    """Resolve a device name (``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise DeviceError(f"Unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps.") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                "CUDA was requested but this PyTorch build sees no CUDA GPU; the CPU works, "
                "and a CUDA build of PyTorch can use the GPU (see README, 'GPU')."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"{name} does not exist: this machine has {torch.cuda.device_count()} GPU(s)."
            )
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError("MPS was requested but this machine or PyTorch build has no "
                              "MPS; the CPU works.")
    elif device.type != "cpu":
        raise DeviceError(f"Unsupported device {name!r}: use auto, cpu, cuda or mps.")
    return device


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    import torch

    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        if probe is not None and not probe():
            return False
    except (RuntimeError, AttributeError):
        pass
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def select_precision(device: torch.device, precision: str = "auto") -> str:
    """Resolve ``auto`` to ``fp32``, ``bf16`` or ``fp16`` for `device`."""
    import torch

    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise InvalidArgumentError(f"Unknown precision {precision!r}: use one of {PRECISIONS}.")
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise InvalidArgumentError("fp16 is not supported on the CPU: use bf16 or fp32.")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "mps":
        return "fp16"
    return "bf16" if cpu_supports_bf16() else "fp32"


def autocast_factory(
    device: torch.device, precision: str
) -> Callable[[], contextlib.AbstractContextManager[object]]:
    """A zero-argument factory of the autocast context for `precision` on `device`."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return functools.partial(torch.autocast, device_type=device.type, dtype=dtype)


#: Most windows per forward pass: past 16 a GPU is busy and a bigger batch only delays
#: the regions it holds.
MAX_BATCH = 16
#: Share of the device's free memory the windows of one batch may take (the rest: the
#: caching allocator's slack, the copies in flight, other models).
MEMORY_SHARE = 0.5


def batch_size_for(free_bytes: int, bytes_per_window: int, cap: int = MAX_BATCH,
                   share: float = MEMORY_SHARE) -> int:
    """Windows per pass that fit in `share` of `free_bytes` at `bytes_per_window` each
    (bytes of device memory one window's forward takes at its peak): at least 1 (one
    window always runs; too little memory then fails with the device's own error), at
    most `cap`, otherwise proportional to the free memory."""
    fit = int(free_bytes * share) // max(1, int(bytes_per_window))
    return int(max(1, min(int(cap), fit)))


def auto_batch_size(device: torch.device, bytes_per_window: int,
                    memory: Callable[[torch.device], tuple[int, int]] | None = None,
                    cap: int = MAX_BATCH) -> int:
    """Windows per forward pass: 1 on the CPU (batching buys nothing on a few cores and
    delays the first region); on a GPU as many as fit in half the free memory, up to
    `cap` (`batch_size_for`). `memory`: device -> (free, total) bytes, by default
    ``torch.cuda.mem_get_info`` (a test passes its own figure).

    `bytes_per_window` comes from the model's catalogue entry (``extra``) when it has
    one, else 1 GiB (`engine.separator`); `peak_memory` measures the real figure."""
    if device.type != "cuda":
        return 1
    if memory is None:
        import torch

        memory = torch.cuda.mem_get_info
    free, _total = memory(device)
    return batch_size_for(free, bytes_per_window, cap)


def peak_memory(run: Callable[[], object], device: torch.device) -> int:
    """Bytes of device memory `run()` allocated at its peak beyond what was allocated
    before it (CUDA's caching-allocator statistics; the work is synchronised on both
    sides). Per batch size, ``peak_memory(lambda: model.forward(batch), device)`` gives
    the real bytes per window (bench/bench_gpu.py)."""
    import torch

    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - base)


#: libgomp's spin count before a waiting OpenMP thread sleeps (its default: 300,000).
#: Measured (bench/bench_threads.py): with the cores shared, the default's spinning
#: threads take the CPU from the thread everyone waits for. One htdemucs window, 2 threads,
#: idle / with a competing process: default 2.70 / 5.62 s, 10,000 spins 2.40 / 4.53 s,
#: 1,000 spins 2.35 / 4.19 s, OMP_WAIT_POLICY=PASSIVE 2.73 / 3.85 s (issue 15).
GOMP_SPINCOUNT = "1000"


def configure_threads(environ: MutableMapping[str, str] | None = None) -> bool:
    """Make OpenMP's idle threads yield the CPU soon (`GOMP_SPINCOUNT`) unless the user
    chose a wait policy (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` set), in this
    process's environment or in `environ` (a child's). OpenMP reads it once, when torch
    is imported: call it first. Returns False when, for this process, torch was already
    imported (then it changes nothing)."""
    import os
    import sys

    if environ is None and "torch" in sys.modules:
        return False
    env = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" not in env and "GOMP_SPINCOUNT" not in env:
        env["GOMP_SPINCOUNT"] = GOMP_SPINCOUNT
    return True
