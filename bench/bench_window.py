"""One htdemucs window through each forward path, in one process, interleaved, medians:

    python bench/bench_window.py --size full --repeats 3

Rows (each ratio at one precision, except the last, which says so):
- fp32: eager against the ONNX Runtime layers (`engine.onnxlayers`, as
  ``STEMBRIDGE_COMPILE=onnx`` serves them), with the export time and the max abs
  difference;
- bf16: eager under bf16 autocast (what the engine's bf16 runs) against "bf16 layers":
  a bf16 copy of every encoder/decoder layer and cross-transformer layer, called with
  bf16 activations, STFT/iSTFT and the glue between layers in fp32 (one cast in and out
  of each layer instead of autocast's casts around every op). SDR of each against fp32.
  The bf16 layers are *lower* precision than autocast in places: autocast runs
  group_norm, layer_norm, softmax and GELU in fp32 and only convolutions and matrix
  products in bf16; here those norms, softmax, GELU, GLU and the residual additions run
  in bf16 too (accumulating in fp32 inside the kernels where torch does).

Random weights of the released architecture (`testmodels.make_test_model`); speed does
not depend on weight values. Not wired into the engine: a measurement (issue 15).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def bf16_layers(model: Any) -> Any:
    """A shallow copy of a demucs model whose layers run in bf16 (see the module doc)."""
    import torch

    class BF16(torch.nn.Module):
        def __init__(self, layer: Any) -> None:
            super().__init__()
            self.layer = copy.deepcopy(layer).to(torch.bfloat16)
            self.empty = getattr(layer, "empty", False)

        def forward(self, *args: Any) -> Any:
            out = self.layer(*(a.to(torch.bfloat16) if isinstance(a, torch.Tensor) else a
                               for a in args))
            if isinstance(out, tuple):
                return tuple(o.float() if isinstance(o, torch.Tensor) else o for o in out)
            return out.float()

    fast = copy.copy(model)
    fast._modules = dict(model._modules)
    for name in ("encoder", "decoder", "tencoder", "tdecoder"):
        fast._modules[name] = torch.nn.ModuleList([BF16(m) for m in model._modules[name]])
    cross = copy.copy(model.crosstransformer)  # its positional embedding stays fp32
    cross._modules = dict(cross._modules)
    for name in ("layers", "layers_t"):
        cross._modules[name] = torch.nn.ModuleList([BF16(m) for m in cross._modules[name]])
    fast._modules["crosstransformer"] = cross
    return fast


def sdr(ref: Any, est: Any) -> float:
    import torch

    return float(10 * torch.log10((ref ** 2).sum() / ((ref - est.float()) ** 2).sum()))


def timed(fn: Any, x: Any) -> float:
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="full", choices=("full", "tiny"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    args = p.parse_args(argv)
    import torch

    from engine.models import demucs, testmodels
    from engine.models.demucs import onnx_layers

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="stembridge-window-") as tmp:
        testmodels.make_test_model("htdemucs", Path(tmp), size=args.size)
        sep = demucs.load("htdemucs", torch.device("cpu"), Path(tmp))
    model = sep.models[0]
    x = torch.randn(1, 2, sep.valid_length(sep.segment_length),
                    generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    ort_model, payload = onnx_layers(model, x, None)
    print(f"ONNX export + sessions {time.perf_counter() - t0:.1f}s "
          f"({len(payload) / 2**20:.0f} MiB)")
    bf = bf16_layers(model)

    def autocast(v: Any) -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(v)

    paths = {"fp32 eager": model, "fp32 onnx layers": ort_model,
             "bf16 autocast": autocast, "bf16 layers": bf}
    times: dict[str, list[float]] = {k: [] for k in paths}
    with torch.inference_mode():
        ref = model(x)
        outs = {k: fn(x) for k, fn in paths.items()}  # warm-up, and the outputs
        for _ in range(max(1, args.repeats)):
            for k, fn in paths.items():
                times[k].append(timed(fn, x))
    med = {k: statistics.median(v) for k, v in times.items()}
    for k in paths:
        print(f"{k:18s} {med[k]:6.2f}s  (runs {', '.join(f'{t:.2f}' for t in times[k])}); "
              f"max abs vs fp32 {float((outs[k].float() - ref).abs().max()):.1e}; "
              f"SDR vs fp32 {sdr(ref, outs[k]):.1f} dB")
    print(f"fp32: onnx layers {med['fp32 eager'] / med['fp32 onnx layers']:.2f}x eager")
    print(f"bf16: bf16 layers {med['bf16 autocast'] / med['bf16 layers']:.2f}x autocast "
          "(lower precision than autocast in norms/softmax/GELU: see the module doc)")
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
