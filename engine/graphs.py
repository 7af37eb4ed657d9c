"""CUDA graphs: a network's forward for one fixed window shape and precision, captured
once and replayed, so a batch costs one graph launch instead of thousands of kernel
launches from Python.

    run = capture(module, probe, "fp32")     # probe: a (batch, channels, samples) CUDA tensor
    out = run(x)                             # x shaped like probe; out: a fresh tensor

The forward is run a few times on a side stream first (cuFFT plans, cuDNN algorithms and
the caching allocator settle outside the capture), then captured into a graph with its
own memory pool. A replay reads the graph's static input, so `run` copies `x` into it and
returns a copy of the static output (the next replay overwrites it, possibly while the
caller's copy to the host is still in flight). Only on CUDA; `capture` raises on
anything the capture cannot take (a host synchronisation inside the forward, a CPU
tensor, a shape that changes), and `engine.acceleration.FastForward` then stays eager and
says why. Opt-in: ``STEMBRIDGE_COMPILE=graphs``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: Forward passes before the capture.
WARMUP = 3


def unavailable_reason() -> str | None:
    """Why CUDA graphs cannot run here (no CUDA device, a torch without graphs), or None."""
    import torch

    if not hasattr(torch.cuda, "CUDAGraph"):
        return f"torch {torch.__version__} has no CUDA graphs"
    if not torch.cuda.is_available():
        return "CUDA graphs need a CUDA GPU"
    return None


def _precision(precision: str) -> contextlib.AbstractContextManager[object]:
    """Autocast for `precision`, without its cache of cast weights: cast copies made
    during a capture would be freed when the context ends while the graph still reads
    them (PyTorch's CUDA-graphs notes); the graph casts the weights on every replay."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype, cache_enabled=False)


def capture(module: Any, probe: torch.Tensor, precision: str,
            warmup: int = WARMUP) -> Callable[[torch.Tensor], torch.Tensor]:
    """`module`'s forward on inputs shaped like `probe` (a CUDA tensor), at `precision`
    (fp32, bf16 or fp16 autocast), as a replayed CUDA graph; raises `ValueError` on a
    non-CUDA probe and whatever the capture raises on a forward it cannot take."""
    import torch

    if probe.device.type != "cuda":
        raise ValueError(f"CUDA graphs need a CUDA input, not {probe.device}")
    device = probe.device
    static_in = probe.detach().clone()
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    # `torch.device(device)`: tensors a forward makes without naming a device (demucs'
    # STFT window, its 2-D positional embedding) are made on the GPU, inside the graph,
    # instead of on the host and copied (a copy from pageable memory cannot be captured).
    # Being a torch-function mode, it also turns off nn.MultiheadAttention's fused fast
    # path in what is captured (same result to float rounding; `_differs` checks it).
    with torch.inference_mode(), torch.device(device), torch.cuda.stream(side):
        for _ in range(max(1, warmup)):
            with _precision(precision):
                module(static_in)
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    with (torch.inference_mode(), torch.device(device),
          torch.cuda.graph(graph, capture_error_mode="thread_local"), _precision(precision)):
        static_out = module(static_in)
    shape = tuple(static_in.shape)

    def run(x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape) != shape:
            raise ValueError(f"this graph takes {shape}, not {tuple(x.shape)}")
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()

    return run
