"""Benchmark the engine against demucs' own `apply_model`, in one process.

    python bench/bench_engine.py --model htdemucs --seconds 30 300 --precision fp32 bf16
    python bench/bench_engine.py --model spleeter-2stems --seconds 60
    python bench/bench_engine.py --model htdemucs --seconds 1200 --rss-only
    python bench/bench_engine.py --seconds 30 --precision fp32 bf16 --paths eager compiled \
        --process --repeats 3

For every duration it prints: wall time of a warm `Engine` job (decode to files written),
real-time factor (wall / audio seconds), time to the first finalized region, model-forward
time vs everything else (overhead %), and for demucs models the same audio through
`demucs.apply.apply_model(model, mix, shifts=0, split=True, overlap=same)` as a ratio.
Every ratio is at one precision: the engine in fp32 against apply_model in fp32, the engine
in bf16 against apply_model under the same bf16 autocast (a ratio across precisions would
mostly measure the autocast). Each precision also prints the machine's practical limit (a
matrix product on the same threads at that precision, `bench/limits.py`), the model's
arithmetic per second of window (the windows a job computes, overlap included), and the fraction of the limit the forward pass reaches.
`--rss-only` runs the job in a fresh child process and reports its peak RSS.
`--paths eager compiled onnx` adds rows for the compiled forward (`engine.acceleration`,
built or loaded from ``<models dir>/.compiled`` before the rows are timed; skipped with the
reason when unavailable): "compiled" is torch.compile by layer, "onnx" the layers through
onnxruntime (fp32 only; `engine.onnxlayers`). One-window comparisons of the ONNX layers
and of bf16 layers without autocast: `bench/bench_window.py`. `--process` adds whole-process rows: `stembridge split` against
a script that loads the same model with demucs, reads the file, runs `apply_model` and
writes the stems, both at the same precision, threads and allocator settings
(`engine.allocator`; the script also once more with glibc's malloc defaults, labelled). `--repeats N` alternates ours
and theirs N times and compares medians (a loaded machine drifts between runs).

Demucs models use random weights of the released architecture (`make-test --size full`),
since real weights cannot be downloaded here; speed does not depend on weight values.
The audio is the real MUSDB18 excerpt that stempeg ships, looped to the duration (or
`--audio FILE`). Machines are noisy: compare the ratios, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _source_audio(path: str | None) -> tuple[np.ndarray, int]:
    from engine.audio import decode

    if path is None:
        import stempeg

        path = stempeg.example_stem_path()
    audio = decode(Path(path))
    return audio.samples, audio.samplerate


def make_input(seconds: float, folder: Path, audio: str | None) -> Path:
    import soundfile as sf

    samples, sr = _source_audio(audio)
    n = int(seconds * sr)
    reps = int(np.ceil(n / samples.shape[-1]))
    data = np.tile(samples, (1, reps))[:, :n]
    path = folder / f"input-{seconds:g}s.wav"
    sf.write(path, data.T, sr, subtype="PCM_16")
    return path


def models_dir_for(model: str, folder: Path, size: str = "full") -> Path:
    from engine.models import demucs, testmodels

    if model in demucs.SPECS:
        testmodels.make_test_model(model, folder, size=size, fmt="safetensors")
    return folder


def run_job(engine, path: Path, model: str, out: Path, start_at: float = 0.0) -> dict:
    """One job as the CLI runs it: regions written to stem files, committed at the end."""
    from engine.audio import StemFileWriter
    from engine.separator import SplitRequest

    t0 = time.perf_counter()
    job = engine.prepare(SplitRequest(path, model=model, start_at=start_at))
    writers = {n: StemFileWriter(out, job.frames, job.channels, job.samplerate)
               for n in job.stem_names}
    first = None
    for region in job.run():
        if first is None:
            first = time.perf_counter() - t0
        for n, a in region.stems.items():
            writers[n].write(region.start, a)
    for n, w in writers.items():
        w.commit(out / f"{n}.wav")
    wall = time.perf_counter() - t0
    return {"wall": wall, "first_region": first, "forward": job.timings.forward,
            "decode": job.timings.decode, "duration": job.frames / job.samplerate}


def reference_apply_model(engine, model: str, path: Path, overlap: float,
                          precision: str) -> float:
    """Seconds for demucs' apply_model on the same (normalised) mix, same threads, under
    the same precision as the engine run it is compared with (fp32, or bf16/fp16 autocast).
    """
    import torch
    from demucs.apply import apply_model

    from bench.limits import precision_context
    from engine import audio

    sep = engine.model(model)
    decoded = audio.decode(path)
    mix = torch.from_numpy(audio.resample(audio.to_model_channels(decoded.samples),
                                          decoded.samplerate, 44100))
    ref = mix.mean(0)
    mix = (mix - ref.mean()) / ref.std()
    t0 = time.perf_counter()
    with torch.inference_mode(), precision_context(precision):
        apply_model(sep.raw, mix[None], shifts=0, split=True, overlap=overlap, device="cpu")
    return time.perf_counter() - t0


def model_flops_per_second(engine, model: str) -> float:
    """The network's FLOPs per second of audio: one window's forward, counted."""
    import torch

    from bench.limits import forward_flops

    sep = engine.model(model)
    n = sep.segment_length
    window = torch.zeros(1, 2, sep.valid_length(n))  # demucs: stereo windows
    return forward_flops(sep.raw, window) / (n / sep.spec.samplerate)


def child_rss(args: argparse.Namespace, seconds: float, models: Path, work: Path) -> None:
    """Run one job in a fresh process; print its peak RSS (MB)."""
    code = f"""
import sys, json, resource, time
sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
from engine.config import EngineConfig
from engine.separator import Engine
from bench.bench_engine import run_job
e = Engine(EngineConfig(precision={args.precision!r}, use_cache=False, models_dir=Path({str(models)!r})))
r = run_job(e, Path({str(work / f'input-{seconds:g}s.wav')!r}), {args.model!r}, Path({str(work)!r}))
r['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(r))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if res.returncode:
        print(res.stderr)
        return
    r = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"[{args.model} {seconds:g}s, child process] wall {r['wall']:.1f}s "
          f"RTF {r['wall'] / r['duration']:.3f}  peak RSS {r['peak_rss_mb']:.0f} MB")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="htdemucs")
    p.add_argument("--seconds", type=float, nargs="+", default=[30.0])
    p.add_argument("--audio", default=None, help="audio file to loop (default: stempeg's)")
    p.add_argument("--precision", nargs="+", default=["auto"],
                   help="one or more of auto, fp32, bf16: every ratio is at one precision")
    p.add_argument("--batch-size", type=int, default=0)
    p.add_argument("--size", default="full", choices=("full", "tiny"),
                   help="demucs test model size (tiny: the chunk loop's own memory)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-reference", action="store_true", help="skip apply_model")
    p.add_argument("--rss-only", action="store_true", help="peak RSS of a child process")
    p.add_argument("--paths", nargs="+", default=["eager"],
                   choices=("eager", "compiled", "onnx"),
                   help="engine forward paths to time (compiled, onnx: built or loaded "
                        "first; onnx is fp32 only)")
    p.add_argument("--process", action="store_true",
                   help="also time whole processes: `stembridge split` vs an apply_model script")
    p.add_argument("--repeats", type=int, default=1,
                   help="alternate ours and theirs this many times; compare medians")
    args = p.parse_args(argv)
    from engine import allocator
    from engine.device import configure_threads

    configure_threads()  # as the CLI does: this process and its children alike
    allocator.configure()  # as the CLI does; apply_model, in this process, runs with it

    import torch

    from bench.limits import matmul_gflops
    from engine.config import EngineConfig
    from engine.models.registry import get_spec
    from engine.separator import Engine

    spec = get_spec(args.model)
    with tempfile.TemporaryDirectory(prefix="stembridge-bench-") as tmp:
        work = Path(tmp)
        models = models_dir_for(args.model, work / "models", args.size)
        for seconds in args.seconds:
            make_input(seconds, work, args.audio)
        if args.rss_only:
            args.precision = args.precision[0]
            for seconds in args.seconds:
                child_rss(args, seconds, models, work)
            return
        print(f"torch threads {torch.get_num_threads()}; cpu count {os.cpu_count()}; "
              f"load average {os.getloadavg()}")
        flops_per_s = None
        for precision in args.precision:
            engine = Engine(EngineConfig(device=args.device, precision=precision,
                                         batch_size=args.batch_size, use_cache=False,
                                         models_dir=models))
            t0 = time.perf_counter()
            engine.model(args.model)
            prec = engine.precision
            limit = matmul_gflops(prec if prec != "fp16" else "fp16")
            print(f"== {args.model} on {engine.device}, {prec}: loaded in "
                  f"{time.perf_counter() - t0:.2f}s; matmul limit {limit:.0f} GFLOP/s ({prec})")
            if flops_per_s is None and spec.family == "demucs":
                flops_per_s = model_flops_per_second(engine, args.model)
                print(f"   model arithmetic: {flops_per_s / 1e9:.1f} GFLOP per second of window "
                      "(matmuls and convolutions)")
            warm = work / "warm.wav"
            shutil.copy(work / f"input-{args.seconds[0]:g}s.wav", warm)
            run_job(engine, warm, args.model, work)  # warm-up (allocator, kernels)
            for path_name in args.paths:
                if path_name != "eager" and not _compile(engine, args.model, path_name):
                    continue
                for seconds in args.seconds:
                    _engine_row(engine, args, spec, seconds, work, prec, path_name, limit,
                                flops_per_s)
            if args.process and spec.family == "demucs":
                for seconds in args.seconds:
                    _process_row(args, seconds, models, work, prec)


def _compile(engine, model: str, path_name: str = "compiled") -> bool:
    """Build (or load from the cache) the compiled forward (`path_name` "compiled":
    torch.compile, as ``STEMBRIDGE_COMPILE=on``; "onnx": onnxruntime, as
    ``STEMBRIDGE_COMPILE=onnx``), replacing another path's; False when it is unavailable."""
    t0 = time.perf_counter()
    getattr(engine.model(model), "fast", {}).clear()
    os.environ["STEMBRIDGE_COMPILE"] = "onnx" if path_name == "onnx" else "on"
    fasts = engine.accelerate(model, wait=True)
    states = [s for f in fasts for s in f.status.values()]
    print(f"   compiled forward: {states or 'none for this model'} "
          f"({time.perf_counter() - t0:.1f}s)", flush=True)
    return bool(states) and all(s.startswith("ready") for s in states)


def _engine_row(engine, args, spec, seconds: float, work: Path, prec: str, path_name: str,
                limit: float, flops_per_s: float | None) -> None:
    """One engine job, then (demucs) apply_model at the same precision: the ratio.
    With `--repeats`, ours and theirs alternate and the medians are compared."""
    path = work / f"input-{seconds:g}s.wav"
    ours: list[dict] = []
    theirs: list[float] = []
    for _ in range(max(1, args.repeats)):
        ours.append(run_job(engine, path, args.model, work))
        if spec.family == "demucs" and not args.no_reference:
            theirs.append(reference_apply_model(engine, args.model, path,
                                                spec.default_overlap, prec))
    r = sorted(ours, key=lambda x: x["wall"])[len(ours) // 2]
    overhead = (r["wall"] - r["forward"]) / r["wall"] * 100
    line = (f"[{seconds:g}s {prec} {path_name}] engine wall {r['wall']:.2f}s  "
            f"RTF {r['wall'] / seconds:.3f}  first region {r['first_region']:.2f}s"
            f"  forward {r['forward']:.2f}s  overhead {overhead:.1f}%  peak RSS "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if flops_per_s:
        # the windows the job computed (overlap and the padded last window included),
        # not the audio's length, are what the forward pass did
        from engine.chunking import ChunkPlan

        sep = engine.model(args.model)
        frames = int(round(r["duration"] * sep.spec.samplerate))
        windows = len(ChunkPlan(frames, sep.segment_length, spec.default_overlap).windows)
        done = flops_per_s * windows * sep.segment_length / sep.spec.samplerate
        got = done / r["forward"] / 1e9
        line += (f"  {got:.0f} GFLOP/s over {windows} windows = {got / limit * 100:.0f}% "
                 "of the limit")
    print(line, flush=True)
    if theirs:
        ref = statistics.median(theirs)
        print(f"    demucs apply_model ({prec}, same autocast, shifts=0, overlap "
              f"{spec.default_overlap}): {ref:.2f}s RTF {ref / seconds:.3f}  -> "
              f"engine ({path_name})/apply_model at {prec}: {ref / r['wall']:.2f}x "
              f"(median of {len(theirs)}, interleaved)", flush=True)


_THEIRS_PROCESS = """
import sys, time
t0 = time.perf_counter()
import contextlib, numpy as np, soundfile as sf, torch
from demucs.apply import apply_model
from demucs.hf import load_safetensors_model
from pathlib import Path
model = load_safetensors_model(next(Path({folder!r}).glob("*.safetensors"))).eval()
data, sr = sf.read({src!r}, dtype="float32", always_2d=True)
mix = torch.from_numpy(data.T.copy())
ref = mix.mean(0)
mean, std = ref.mean(), ref.std()
ctx = (torch.autocast("cpu", dtype=torch.bfloat16) if {precision!r} == "bf16"
       else contextlib.nullcontext())
with torch.inference_mode(), ctx:
    out = apply_model(model, ((mix - mean) / std)[None], shifts=0, split=True,
                      overlap={overlap}, device="cpu")[0].float() * std + mean
for name, stem in zip(model.sources, out):
    sf.write(str(Path({out!r}) / (name + ".wav")), stem.numpy().T, sr, subtype="FLOAT")
"""


def _process_row(args, seconds: float, models: Path, work: Path, prec: str) -> None:
    """A whole process each: `stembridge split` against a script that loads demucs, reads
    the file, runs apply_model and writes the stems (same threads, same precision)."""
    from engine.models.registry import get_spec

    src = work / f"input-{seconds:g}s.wav"
    spec = get_spec(args.model)
    ours_cmd = [sys.executable, "-m", "bridge", "split", str(src), "--model", args.model,
                "--precision", prec, "--models-dir", str(models), "--out",
                str(work / "split-out"), "--no-cache", "-q"]
    theirs_out = work / "theirs-out"
    theirs_out.mkdir(exist_ok=True)
    theirs_code = _THEIRS_PROCESS.format(folder=str(models / args.model), src=str(src),
                                         precision=prec, overlap=spec.default_overlap,
                                         out=str(theirs_out))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    from engine.allocator import TUNABLES
    from engine.device import configure_threads

    configure_threads(env)  # the same OpenMP setting the CLI gives `split`, for both
    # `split` keeps freed memory for reuse (engine.allocator); the script gets the same
    # settings through glibc's tunables, and is also run with glibc's defaults (what a
    # user running demucs gets), labelled as such
    same = dict(env, GLIBC_TUNABLES=TUNABLES)
    runs: dict[str, tuple[list[str], dict[str, str]]] = {
        "split": (ours_cmd, env),
        "script": ([sys.executable, "-c", theirs_code], same),
        "script, glibc malloc defaults": ([sys.executable, "-c", theirs_code], env)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(max(1, args.repeats)):
        for key, (cmd, run_env) in runs.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, env=run_env, check=True, capture_output=True)
            times[key].append(time.perf_counter() - t0)
    a, b, c = (statistics.median(times[k]) for k in runs)
    print(f"[{seconds:g}s {prec} process] stembridge split {a:.2f}s  apply_model script "
          f"{b:.2f}s  -> {b / a:.2f}x (median of {len(times['split'])}, interleaved; same "
          "threads and allocator settings; import, model load, decode and writing "
          f"included). The script with glibc's malloc defaults: {c:.2f}s -> {c / a:.2f}x",
          flush=True)


if __name__ == "__main__":
    main()
