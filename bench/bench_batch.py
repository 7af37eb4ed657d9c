"""`stembridge batch` vs the shell loop users script today, on the same files.

    python bench/bench_batch.py                               # 20 files of 8 s, tiny htdemucs
    python bench/bench_batch.py --size full --seconds 30      # released-size random weights
    python bench/bench_batch.py --no-ray                      # without the Ray run
    python bench/bench_batch.py --ray-overlap --files 10      # Ray actors: overlap on/off

Three runs over the same folder of `--files` inputs, each with the same model, precision
(fp32 unless `--precision`), stem count, no cache and `--threads` torch threads (also
``OMP_NUM_THREADS``), so each uses the same cores:

1. *shell loop* (the reference): one cold ``stembridge split FILE`` process per file, one
   after the other (new interpreter, torch import, model load each time);
2. *local*: one ``stembridge batch FOLDER`` process (one warm engine, decode overlapped);
3. *ray*: ``stembridge batch FOLDER --ray --workers 1`` in one process that starts a
   local Ray cluster, one actor of `--threads` CPUs (its total includes starting the
   cluster and the actor; the per-file overhead is its wall time beyond the local run's,
   divided by the files).

Prints wall seconds and throughput (audio-hours per hour) of each, and each one's ratio to
the shell loop (the goal for local: >= 3x).

``--ray-overlap`` instead measures, in this one process on one local Ray cluster, the Ray
executor with one actor whose next input is decoded while it separates the current one
(``prefetch``, the default) against the same executor running its calls one after the
other (the reference), alternating `--repeats` times, same model, precision, threads and
files (``--input-format`` wav, flac or mp3). Actor start is in both totals. Models are random-weight models of the real
architecture (`stembridge models make-test`); the audio is the music-like test signal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _inputs(folder: Path, files: int, seconds: float, fmt: str = "wav") -> list[Path]:
    import soundfile as sf

    from tests.conftest import music_like

    folder.mkdir(parents=True)
    paths = []
    for i in range(files):
        path = folder / f"track{i:02d}.{fmt}"
        kw = {"subtype": "PCM_16"} if fmt in ("wav", "flac") else {"format": "MP3"}
        sf.write(path, music_like(seconds, seed=i).T, 44100, **kw)
        paths.append(path)
    return paths


def _ray_overlap(args: argparse.Namespace, work: Path, models: Path) -> dict[str, object]:
    """Wall seconds of the Ray executor with and without decode overlap, alternated."""
    import ray

    from bridge.batch.cluster import RayExecutor
    from bridge.batch.sources import discover
    from bridge.batch.task import BatchOptions
    from bridge.commands.batch import BatchRun

    os.environ["STEMBRIDGE_CACHE_DIR"] = str(work / "cache")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    opts = BatchOptions(model=args.model, stems=args.stems, precision=args.precision,
                        use_cache=False, models_dir=models, threads=args.threads)
    items, _ = discover([str(work / "in")])
    walls: dict[str, list[float]] = {"sequential (reference)": [], "overlapped": []}
    ray.init(address="local", num_cpus=max(2, args.threads), include_dashboard=False,
             log_to_driver=False)
    try:
        for rep in range(args.repeats):
            for name, prefetch in (("sequential (reference)", False), ("overlapped", True)):
                out = work / f"ray-{int(prefetch)}-{rep}"
                run = BatchRun(out, opts)
                executor = RayExecutor(opts, out, workers=1, cpus_per_worker=args.threads,
                                       prefetch=prefetch)
                t0 = time.perf_counter()
                executor.run(run.plan(items, True), run.on_start, run.on_outcome)
                walls[name].append(time.perf_counter() - t0)
                run.record.close()
                if run.tally.done != len(items):
                    raise SystemExit(f"the Ray run into {out} did {run.tally.done} files")
    finally:
        ray.shutdown()
    best = {name: min(w) for name, w in walls.items()}
    return {"walls": {k: [round(x, 2) for x in v] for k, v in walls.items()},
            "best": {k: round(v, 2) for k, v in best.items()},
            "ratio_overlapped_vs_sequential": round(
                best["sequential (reference)"] / best["overlapped"], 3)}


def _timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=False, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _done(out: Path, expected: int) -> int:
    data = json.loads((out / "stembridge-batch-summary.json").read_text())
    done = int(data["files"]["done"])
    if done != expected:
        raise SystemExit(f"the batch into {out} did {done} of {expected} files")
    return done


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="htdemucs")
    p.add_argument("--size", choices=("tiny", "full"), default="tiny")
    p.add_argument("--stems", type=int, default=4)
    p.add_argument("--files", type=int, default=20)
    p.add_argument("--seconds", type=float, default=8.0, help="audio seconds per file")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--threads", type=int, default=1, help="torch threads of every run")
    p.add_argument("--no-ray", action="store_true")
    p.add_argument("--ray-overlap", action="store_true",
                   help="only the Ray executor, decode overlap on vs off (see above)")
    p.add_argument("--repeats", type=int, default=2, help="--ray-overlap: runs of each")
    p.add_argument("--input-format", choices=("wav", "flac", "mp3"), default="wav")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from engine.models.testmodels import make_test_model

    with tempfile.TemporaryDirectory(prefix="stembridge-bench-batch-") as tmp:
        work = Path(tmp)
        models = work / "models"
        make_test_model(args.model, models, size=args.size, fmt="safetensors")
        files = _inputs(work / "in", args.files, args.seconds, args.input_format)
        if args.ray_overlap:
            result = {"model": args.model, "size": args.size, "precision": args.precision,
                      "files": args.files, "seconds_per_file": args.seconds,
                      "input_format": args.input_format, "threads": args.threads,
                      **_ray_overlap(args, work, models)}
            print(json.dumps(result, indent=2))
            return
        env = {**os.environ, "STEMBRIDGE_CACHE_DIR": str(work / "cache"),
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               "OMP_NUM_THREADS": str(args.threads)}
        common = ["--model", args.model, "--stems", str(args.stems), "--models-dir",
                  str(models), "--precision", args.precision, "--no-cache", "-q"]
        cli = [sys.executable, "-m", "bridge"]
        audio = args.files * args.seconds
        runs: dict[str, float] = {}
        loop = 0.0
        for path in files:
            loop += _timed([*cli, "split", str(path), "--out", str(work / "loop"), *common],
                           env)
        missing = [f for f in files if not (work / "loop" / f.stem / "stems.json").exists()]
        if missing:
            raise SystemExit(f"the shell loop failed on {missing[0]}")
        runs["shell loop (split per file)"] = loop
        runs["batch, local executor"] = _timed(
            [*cli, "batch", str(work / "in"), "--out", str(work / "local"), "--threads",
             str(args.threads), *common], env)
        _done(work / "local", args.files)
        if not args.no_ray:
            runs["batch --ray (1 actor, here)"] = _timed(
                [*cli, "batch", str(work / "in"), "--out", str(work / "ray"), "--ray",
                 "--workers", "1", "--cpus-per-worker", str(args.threads), "--threads",
                 str(args.threads), *common], env)
            _done(work / "ray", args.files)
    report = {"model": args.model, "size": args.size, "precision": args.precision,
              "files": args.files, "seconds_per_file": args.seconds, "threads": args.threads,
              "runs": {name: {"wall_seconds": round(wall, 2),
                              "audio_hours_per_hour": round(audio / wall, 2),
                              "ratio_to_shell_loop": round(loop / wall, 2)}
                       for name, wall in runs.items()}}
    if "batch --ray (1 actor, here)" in runs:
        extra = runs["batch --ray (1 actor, here)"] - runs["batch, local executor"]
        report["ray_overhead_seconds_per_file"] = round(extra / args.files, 3)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.files} files x {args.seconds:g} s, {args.model} ({args.size}), "
          f"{args.precision}, {args.threads} torch thread(s) in every run, no cache")
    print(f"{'run':32s} {'wall s':>8s} {'audio-h/h':>10s} {'x shell loop':>13s}")
    for name, r in report["runs"].items():
        print(f"{name:32s} {r['wall_seconds']:8.1f} {r['audio_hours_per_hour']:10.2f} "
              f"{r['ratio_to_shell_loop']:13.2f}")
    if "ray_overhead_seconds_per_file" in report:
        print("ray overhead beyond the local executor: "
              f"{report['ray_overhead_seconds_per_file']:.2f} s per file (cluster and "
              "actor start included)")


if __name__ == "__main__":
    main()
