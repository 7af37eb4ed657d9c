"""Benchmark the engine on a CUDA GPU against demucs' own `apply_model` on the same GPU.

    python bench/bench_gpu.py                      # 240 s song, fp32 and bf16, batches 1 4 8 16
    python bench/bench_gpu.py --seconds 60 --batches 1 16 --precision bf16 --budget 120

htdemucs at the released size with random weights (`engine.models.testmodels`, made here:
nothing is downloaded; speed does not depend on weight values), a song made of the MUSDB18
excerpt that stempeg ships, looped to `--seconds` (as bench/bench_engine.py does); where
that excerpt cannot be read (no stempeg, or no ffmpeg to decode it: the lent GPU machine)
a deterministic music-like signal of `--seconds` (`tests.conftest.music_like`), said in
the output (speed does not depend on the music either). Warm:
the model is loaded and run once before anything is timed. Per precision (fp32 with TF32
off; bf16 autocast) and per batch size it prints:

- job: a warm `Engine` job from decode to stem files written (wall, first region, RTF)
  and the device's peak memory during it;
- loop: the chunk loop alone on the prepared mix (`engine.chunking.separate`: windows,
  forward passes, copies, overlap-add) and its difference from apply_model's output;
- apply_model on the same mix on the same GPU (``shifts=0, split=True``, the same
  overlap, under the same autocast) and the ratio apply_model / ours, at equal precision;
- bytes per window measured (`engine.device.peak_memory` of one forward at that batch
  size, divided by it) against the figure the engine assumes without one;
- a CUDA-graphs row (``STEMBRIDGE_COMPILE=graphs``: graphs for the first window and the
  largest batch) at the largest batch size.

Every ratio is between runs at one precision. ``--device cpu --size tiny --seconds 20``
is a smoke run of the script itself on a machine without a GPU (memory figures n/a, no
graphs). `--budget` (seconds) time-boxes the whole run: rows that would start after it are skipped and say so. Each row that fails prints its
error and the benchmark goes on. Run by bench/device_check.sh.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODEL = "htdemucs"
#: where everything runs: "cuda" (the benchmark) or "cpu" (a smoke run of the script)
DEVICE = "cuda"


def on_gpu() -> bool:
    return DEVICE == "cuda"


def sync() -> None:
    import torch

    if on_gpu():
        torch.cuda.synchronize()


def say(text: str) -> None:
    print(text, flush=True)


class Budget:
    """The run's time box: `left()` seconds until `seconds` after it was made."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def stage(name: str, budget: Budget, fn: Callable[[], Any]) -> Any:
    """Run one row: skipped when the budget is spent, its error printed, never raised."""
    if budget.left() <= 0:
        say(f"   {name}: skipped (time box spent)")
        return None
    try:
        return fn()
    except Exception:  # a failed row must not end the benchmark
        say(f"   {name}: FAILED\n" + traceback.format_exc())
        return None


def synced(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of `fn`, the GPU synchronised on both sides."""
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t0, out


def precision_context(precision: str) -> Any:
    import contextlib

    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(DEVICE, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def make_song(seconds: float, work: Path) -> tuple[Path, str]:
    """A `seconds`-long 44.1 kHz stereo WAV under `work` and what it is made of: the
    stempeg excerpt looped, else (no stempeg or no ffmpeg) the music-like signal."""
    from bench.bench_engine import make_input
    from engine.errors import StembridgeError

    try:
        return make_input(seconds, work, None), "the MUSDB18 excerpt stempeg ships, looped"
    except (ImportError, StembridgeError) as exc:  # no stempeg; no ffmpeg to decode it
        import soundfile as sf

        from tests.conftest import music_like

        path = work / f"music-like-{seconds:g}s.wav"
        sf.write(path, music_like(seconds, seed=1).T, 44100, subtype="PCM_16")
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return path, f"a music-like signal (the stempeg excerpt cannot be read here: {why})"


def prepared_mix(path: Path) -> Any:
    """The song as the engine gives it to the model: (2, samples) float32 at 44.1 kHz,
    normalised by the mono mix's mean and deviation (as demucs does)."""
    import torch

    from engine import audio

    decoded = audio.decode(path)
    mix = torch.from_numpy(audio.resample(audio.to_model_channels(decoded.samples),
                                          decoded.samplerate, 44100))
    ref = mix.mean(0)
    return (mix - ref.mean()) / ref.std()


def apply_model_row(sep: Any, mix: Any, precision: str, overlap: float, repeats: int
                    ) -> tuple[float, Any]:
    """Median seconds of demucs' apply_model on the GPU (mix given on the host, as a user
    passes it), and its output on the host."""
    import torch
    from demucs.apply import apply_model

    times, out = [], None
    for _ in range(max(1, repeats)):
        def run() -> Any:
            with torch.inference_mode(), precision_context(precision):
                return apply_model(sep.raw, mix[None], shifts=0, split=True, overlap=overlap,
                                   device=DEVICE)[0]
        seconds, out = synced(run)
        times.append(seconds)
    assert out is not None
    return statistics.median(times), out.float().cpu()


def window_bytes(sep: Any, batch: int, precision: str) -> int:
    """Peak device bytes of one forward of `batch` full windows, per window (0 on the
    CPU)."""
    import torch

    from engine.device import peak_memory

    if not on_gpu():
        return 0
    x = torch.zeros(batch, 2, sep.valid_length(sep.segment_length), device=DEVICE)

    def run() -> None:
        with torch.inference_mode(), precision_context(precision):
            sep.forward(x)

    return peak_memory(run, torch.device(DEVICE)) // batch


def forwards_alone(sep: Any, windows: int, batch: int, precision: str) -> float:
    """Seconds of ``ceil(windows / batch)`` forward passes of `batch` full windows already
    on the device, nothing else: what the loop's copies and overlap-add add to."""
    import torch

    x = torch.zeros(batch, 2, sep.valid_length(sep.segment_length), device=DEVICE)

    def run() -> None:
        with torch.inference_mode(), precision_context(precision):
            for _ in range(-(-windows // batch)):
                sep.forward(x)

    return synced(run)[0]


def job_row(engine: Any, path: Path, work: Path, repeats: int) -> dict:
    import torch

    from bench.bench_engine import run_job

    rows = []
    if on_gpu():
        torch.cuda.reset_peak_memory_stats()
    for _ in range(max(1, repeats)):
        rows.append(run_job(engine, path, MODEL, work))
    row = sorted(rows, key=lambda r: r["wall"])[len(rows) // 2]
    row["peak_gb"] = torch.cuda.max_memory_allocated() / 1e9 if on_gpu() else float("nan")
    return row


def loop_row(sep: Any, mix: Any, batch: int, precision: str, overlap: float,
             repeats: int) -> tuple[float, Any]:
    import torch

    from engine.chunking import separate
    from engine.device import autocast_factory

    autocast = autocast_factory(torch.device(DEVICE), precision)
    times, out = [], None
    for _ in range(max(1, repeats)):
        seconds, out = synced(lambda: separate(sep, mix, overlap=overlap, batch_size=batch,
                                               first_batch=1, autocast=autocast))
        times.append(seconds)
    return statistics.median(times), out


def compare(ours: Any, ref: Any, precision: str) -> str:
    import torch

    err = float((ours - ref).abs().max())
    sdr = float(10 * torch.log10((ref**2).sum() / ((ours - ref) ** 2).sum().clamp_min(1e-20)))
    goal = "goal <= 1e-4" if precision == "fp32" else "goal >= 40 dB"
    return f"max |ours - apply_model| {err:.2e}, SDR {sdr:.1f} dB ({goal})"


def run_precision(args: argparse.Namespace, precision: str, models: Path, song: Path,
                  work: Path, budget: Budget) -> None:
    import torch

    from engine.config import EngineConfig
    from engine.separator import Engine

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    engine = Engine(EngineConfig(device=DEVICE, precision=precision, batch_size=max(args.batches),
                                 use_cache=False, models_dir=models))
    sep = engine.model(MODEL)
    overlap = sep.spec.default_overlap
    from bench.bench_engine import run_job

    t0 = time.perf_counter()
    run_job(engine, song, MODEL, work)  # warm-up: kernels, cuDNN, allocator, pinned buffers
    name = torch.cuda.get_device_name() if on_gpu() else "the CPU"
    say(f"== {MODEL} ({args.size} size, random weights) {precision} (TF32 off) on {name}: "
        f"warm-up job {time.perf_counter() - t0:.2f}s")
    mix = prepared_mix(song)
    seconds = mix.shape[-1] / 44100
    from engine.chunking import ChunkPlan

    windows = len(ChunkPlan(mix.shape[-1], sep.segment_length, overlap).windows)
    ref = stage("apply_model", budget,
                lambda: apply_model_row(sep, mix, precision, overlap, args.repeats))
    if ref is not None:
        say(f"   apply_model ({precision}, same autocast, shifts=0, overlap {overlap}, same "
            f"device): {ref[0]:.3f}s  RTF {ref[0] / seconds:.4f}")
    assumed = sep.spec.window_bytes
    for batch in args.batches:
        engine.config.batch_size = batch

        def rows(batch: int = batch) -> None:
            per = window_bytes(sep, batch, precision)
            job = job_row(engine, song, work, args.repeats)
            wall, out = loop_row(sep, mix, batch, precision, overlap, args.repeats)
            alone = forwards_alone(sep, windows, batch, precision)
            line = (f"   [batch {batch:2d}] job wall {job['wall']:.3f}s (goal <= 0.5)  first "
                    f"region {job['first_region']:.3f}s (goal <= 0.1)  RTF "
                    f"{job['wall'] / seconds:.4f}  peak device memory {job['peak_gb']:.1f} GB"
                    f"\n              loop {wall:.3f}s ({windows} windows); "
                    f"{-(-windows // batch)} forward passes of {batch} alone {alone:.3f}s; "
                    f"bytes/window measured {per / 1e9:.2f} GB (assumed {assumed / 1e9:.2f} GB)")
            line += against(ref, job["wall"], wall, out, precision)
            say(line)

        stage(f"batch {batch}", budget, rows)
    stage("CUDA graphs", budget,
          lambda: graphs_row(engine, sep, song, mix, work, precision, overlap, args, ref))


def against(ref: Any, job_wall: float, loop_wall: float, out: Any, precision: str) -> str:
    """The ratio line against apply_model's (seconds, output) `ref` at `precision`, or ""."""
    if ref is None:
        return ""
    return (f"\n              apply_model/ours at {precision}: job {ref[0] / job_wall:.2f}x, "
            f"loop {ref[0] / loop_wall:.2f}x (goal >= 10x); {compare(out, ref[1], precision)}")


def graphs_row(engine: Any, sep: Any, song: Path, mix: Any, work: Path, precision: str,
               overlap: float, args: argparse.Namespace, ref: Any) -> None:
    from engine.artifacts import ArtifactCache

    batch = max(args.batches)
    os.environ["STEMBRIDGE_COMPILE"] = "graphs"
    t0 = time.perf_counter()
    sep.fast.clear()
    cache = ArtifactCache(work / "compiled")
    fasts = sep.accelerate(cache, precision, 1) + sep.accelerate(cache, precision, batch)
    for fast in fasts:
        fast.join()
    states = sorted({s for f in fasts for s in f.status.values()})
    say(f"   CUDA graphs: {states} ({time.perf_counter() - t0:.1f}s)")
    try:
        if not all(s.startswith("ready") for s in states):
            return
        engine.config.batch_size = batch
        job = job_row(engine, song, work, args.repeats)
        wall, out = loop_row(sep, mix, batch, precision, overlap, args.repeats)
        line = (f"   [batch {batch:2d} CUDA graphs] job wall {job['wall']:.3f}s  first region "
                f"{job['first_region']:.3f}s  loop {wall:.3f}s  peak device memory "
                f"{job['peak_gb']:.1f} GB")
        line += against(ref, job["wall"], wall, out, precision)
        say(line)
    finally:
        sep.fast.clear()
        os.environ["STEMBRIDGE_COMPILE"] = "off"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"],
                        choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--budget", type=float, default=300.0,
                        help="seconds for the whole run; later rows are skipped")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu: a smoke run of this script")
    parser.add_argument("--size", default="full", choices=["full", "tiny"])
    args = parser.parse_args(argv)
    budget = Budget(args.budget)
    global DEVICE
    DEVICE = args.device
    import torch

    say(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
        f"{torch.backends.cudnn.version()}, GPU available: {torch.cuda.is_available()}")
    if on_gpu() and not torch.cuda.is_available():
        say("no CUDA GPU: nothing to benchmark")
        return
    if on_gpu():
        free, total = torch.cuda.mem_get_info()
        say(f"{torch.cuda.get_device_name()}: {free / 1e9:.1f} of {total / 1e9:.1f} GB free")
    from bench.bench_engine import models_dir_for

    os.environ["STEMBRIDGE_COMPILE"] = "off"
    with tempfile.TemporaryDirectory(prefix="stembridge-bench-gpu-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        models = models_dir_for(MODEL, work / "models", args.size)
        song, source = make_song(args.seconds, work)
        say(f"model and {args.seconds:g} s song made in {time.perf_counter() - t0:.1f}s; the "
            f"song: {source}")
        for precision in args.precision:
            stage(precision, budget, functools.partial(run_precision, args, precision, models,
                                                       song, work, budget))
    say(f"bench_gpu done ({args.budget - budget.left():.0f} s)")


if __name__ == "__main__":
    main()
