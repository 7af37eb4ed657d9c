"""Benchmark the MDX-Net and RoFormer families against python-audio-separator, in one
process, on the same model file, at equal precision (fp32; the RoFormers also in bf16,
both sides under the same bf16 autocast, with `--precision fp32 bf16`).

    python bench/bench_models.py --model mdx-voc-ft --seconds 30 300
    python bench/bench_models.py --model bs-roformer-viperx-1297 --seconds 30 --size full

The model is a random-weight test model of the real architecture (`--size full`: the
released sizes; speed does not depend on weight values), written by `make-test` into a
temporary folder. For every duration it prints, for our chunk loop: wall time, real-time
factor (wall / audio seconds) and the time to the first final region; then
python-audio-separator's `MDXSeparator.demix` / `MDXCSeparator.demix` on the same
session or network and audio (it yields nothing before the end), the speed ratio
(theirs / ours) and the max abs difference of the outputs. Peak RSS is the process's
(ours runs first, so its figure is ours alone; theirs is the peak of both), after one
untimed warm-up window. The audio is a music-like signal. Machines are noisy: compare the ratios, not times across runs.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _mix(seconds: float) -> np.ndarray:
    from tests.conftest import music_like

    return music_like(seconds, seed=1)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ours(model, mix: np.ndarray, overlap: float, precision: str = "fp32"
          ) -> tuple[np.ndarray, float, float]:
    import torch

    from engine.chunking import ChunkStats, separate
    from engine.device import autocast_factory

    stats = ChunkStats()
    t0 = time.perf_counter()
    out = separate(model, torch.from_numpy(mix), overlap=overlap, stats=stats,
                   autocast=autocast_factory(model.device, precision)).float().numpy()
    return out[0], time.perf_counter() - t0, float(stats.first_region_seconds or 0.0)


def _theirs(model, folder: Path, mix: np.ndarray, overlap: float, precision: str = "fp32"
            ) -> tuple[np.ndarray, float]:
    import torch

    from bench.limits import precision_context
    from tests.engine import test_mdx, test_roformer

    t0 = time.perf_counter()
    with torch.no_grad(), precision_context(precision, str(model.device)):
        if model.spec.family == "mdx":
            out = test_mdx._oracle(model, overlap).demix(mix)
        else:
            out = test_roformer._oracle_demix(model, folder, mix)[0]
    return np.asarray(out), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mdx-voc-ft")
    parser.add_argument("--seconds", type=float, nargs="+", default=[30.0])
    parser.add_argument("--size", choices=("tiny", "full"), default="full")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=("fp32", "bf16"),
                        help="bf16: both sides under the same bf16 autocast (torch models; "
                             "the ONNX MDX-Net runs fp32 only)")
    args = parser.parse_args(argv)
    from engine import allocator

    allocator.configure()  # as the engine's commands do; the reference runs with it too
    import torch

    from engine.models import registry, testmodels

    with tempfile.TemporaryDirectory(prefix="stembridge-bench-models-") as tmp:
        t0 = time.perf_counter()
        folder = testmodels.make_test_model(args.model, Path(tmp), size=args.size)
        print(f"{args.model} ({args.size}, random weights) written in "
              f"{time.perf_counter() - t0:.1f} s: "
              f"{sum(p.stat().st_size for p in folder.iterdir()) / 2**20:.0f} MB")
        model = registry.load(args.model, torch.device(args.device), Path(tmp))
        overlap = model.spec.default_overlap
        # one window first, untimed: the runtime's first call allocates its memory arena
        # (seconds at the released size), which neither side should pay in its figure
        t0 = time.perf_counter()
        _ours(model, _mix(model.segment_length / model.spec.samplerate), overlap)
        print(f"warm-up (one window, untimed in the figures below): "
              f"{time.perf_counter() - t0:.1f} s")
        for seconds in args.seconds:
            mix = _mix(seconds)
            fp32_out = None
            for prec in args.precision:
                if prec != "fp32" and model.spec.family == "mdx":
                    print(f"{seconds:6.0f} s  {prec}: skipped (the MDX-Net ONNX path is fp32)")
                    continue
                ours, wall, first = _ours(model, mix, overlap, prec)
                rss = _peak_rss_mb()
                quality = ""
                if prec == "fp32":
                    fp32_out = ours
                elif fp32_out is not None:
                    err = float(((fp32_out - ours) ** 2).sum())
                    quality = (f"  SDR vs our fp32 "
                               f"{10 * np.log10(float((fp32_out ** 2).sum()) / max(err, 1e-30)):.1f} dB")
                print(f"{seconds:6.0f} s  {prec} ours: {wall:7.1f} s  RTF {wall / seconds:.3f}  "
                      f"first region {first:.2f} s  peak RSS {rss:.0f} MB{quality}")
                if args.skip_reference:
                    continue
                theirs, ref_wall = _theirs(model, Path(tmp), mix, overlap, prec)
                n = min(theirs.shape[-1], ours.shape[-1])
                diff = float(np.abs(theirs[..., :n] - ours[..., :n]).max())
                print(f"{'':9s}python-audio-separator ({prec}, same autocast): {ref_wall:7.1f} s"
                      f"  RTF {ref_wall / seconds:.3f}  first output at the end  peak RSS "
                      f"{_peak_rss_mb():.0f} MB (both)  ours/theirs at {prec}: "
                      f"{ref_wall / wall:.2f}x  max |diff| {diff:.2e}")


if __name__ == "__main__":
    main()
