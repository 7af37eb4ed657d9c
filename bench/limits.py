"""What the machine can do, measured in the benchmark's own process.

Every benchmark that reports a speed also reports the practical limit of the same cores
at the same precision, so that "x times faster" can be read against "y % of what the
hardware does": a square matrix product on the same threads (bf16 and fp32), and the
model's arithmetic per second of audio (counted by `torch.utils.flop_counter`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any


def matmul_gflops(dtype: str, n: int = 2048, seconds: float = 1.5,
                  device: str = "cpu") -> float:
    """Sustained GFLOP/s of an n x n matrix product in `dtype` ("fp32" | "bf16" | "fp16").

    The best of repeated products over about `seconds`, after one warm-up product; this is
    the practical limit the model's forward pass is compared with.
    """
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    a = torch.randn(n, n, device=device).to(dt)
    b = torch.randn(n, n, device=device).to(dt)
    flop = 2.0 * n ** 3
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b
    sync()
    best = float("inf")
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return flop / best / 1e9


def forward_flops(model: Any, window: Any) -> float:
    """Floating-point operations of one forward pass of `model` on `window`.

    `window` is the model's input tensor, e.g. [batch, channels, samples] for demucs. Counts
    matrix products and convolutions (what dominates); element-wise work is not counted, so
    the figure is a lower bound and the fraction of the limit an upper bound.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(window)
    return float(counter.get_total_flops())


@contextlib.contextmanager
def precision_context(precision: str, device: str = "cpu") -> Iterator[None]:
    """The autocast context for `precision`: nothing for fp32, else bf16/fp16 autocast."""
    import torch

    if precision == "fp32":
        yield
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autocast(device_type=device.split(":")[0], dtype=dtype):
        yield


def best_of(fn: Callable[[], float], repeats: int) -> float:
    """The smallest of `repeats` calls of `fn` (each returns seconds): the least noisy."""
    return min(fn() for _ in range(max(1, repeats)))
