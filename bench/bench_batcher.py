"""N concurrent jobs on one model through the cross-job batcher vs the same jobs one
after another, in the same process, at the same precision.

    python bench/bench_batcher.py --device cuda --size full --jobs 1 4 16
    python bench/bench_batcher.py --device cpu --size tiny --jobs 1 4 --seconds 10

For each N: N different mixes of `--seconds` (seeded noise, 44.1 kHz stereo) are
separated by `engine.chunking.separate`, first one job after another (each job's own
forward passes: its windows per pass are `--job-batch`, default the engine's
`auto_batch_size`), then all N at once, each on a thread of its own, every forward pass
through one `WindowBatcher` (at most `--batch-windows` windows per pass, default as the
engine's server chooses). Printed per N: windows, the batcher's passes and windows per
pass, both walls (seconds), ratio = sequential / batched (> 1: the batcher is faster),
and the largest difference between a job's two outputs. A warm-up job runs first. The
models are random-weight models of the real architecture (`models make-test`).
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _mixes(n: int, seconds: float, seed: int = 0) -> list:
    import torch

    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(2, int(seconds * 44100), generator=gen) * 0.3 for _ in range(n)]


def _sequential(model, mixes: list, batch: int, autocast) -> tuple[float, list]:
    from engine.chunking import separate

    _sync(model.device)
    t0 = time.perf_counter()
    outs = [separate(model, mix, batch_size=batch, autocast=autocast) for mix in mixes]
    _sync(model.device)
    return time.perf_counter() - t0, outs


def _batched(model, mixes: list, batch: int, precision: str, limit, wait: float
             ) -> tuple[float, list, Any]:
    from engine.batcher import WindowBatcher
    from engine.chunking import separate

    batcher = WindowBatcher(limit, max_wait=wait)
    outs: list = [None] * len(mixes)
    errors: list[BaseException] = []

    def job(i: int) -> None:
        fwd = functools.partial(batcher.forward, model, precision=precision, job=f"job{i}")
        try:
            outs[i] = separate(model, mixes[i], batch_size=batch, forward=fwd)
        except BaseException as exc:  # reported after the run
            errors.append(exc)
        finally:
            batcher.finish_job(f"job{i}")

    threads = [threading.Thread(target=job, args=(i,)) for i in range(len(mixes))]
    _sync(model.device)
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    batcher.close()
    if errors:
        raise errors[0]
    return wall, outs, batcher.stats


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="htdemucs")
    p.add_argument("--size", default="full", choices=("full", "tiny"))
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--seconds", type=float, default=30.0, help="audio per job")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--job-batch", type=int, default=0,
                   help="windows per request of one job (0: auto_batch_size)")
    p.add_argument("--batch-windows", type=int, default=0,
                   help="windows per merged pass at most (0: as the server chooses)")
    p.add_argument("--wait-ms", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = p.parse_args(argv)

    import torch

    from bench.bench_engine import models_dir_for
    from engine.batcher import pass_limit
    from engine.config import EngineConfig
    from engine.device import auto_batch_size, autocast_factory, select_device, select_precision
    from engine.models import registry

    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    precision = select_precision(device, args.precision)
    with tempfile.TemporaryDirectory(prefix="stembridge-bench-batcher-") as tmp:
        models = models_dir_for(args.model, Path(tmp), args.size)
        model = registry.load(args.model, device, models)
        spec = registry.get_spec(args.model)
        batch = args.job_batch or auto_batch_size(
            device, spec.window_bytes)
        limit = pass_limit(EngineConfig(batcher_windows=args.batch_windows), device)
        autocast = autocast_factory(device, precision)
        print(f"model {args.model} ({args.size}), device {device}, precision {precision}, "
              f"torch threads {torch.get_num_threads()}, {args.seconds:g} s per job, "
              f"{batch} windows per job request, pass limit "
              f"{limit if isinstance(limit, int) else limit(model)}")
        _sequential(model, _mixes(1, min(args.seconds, 10.0), seed=99), batch, autocast)
        print(f"{'jobs':>4} {'windows':>7} {'passes':>6} {'win/pass':>8} "
              f"{'sequential s':>12} {'batched s':>10} {'ratio':>6} {'max |diff|':>10}")
        for n in args.jobs:
            mixes = _mixes(n, args.seconds)
            seq_wall, seq_outs = _sequential(model, mixes, batch, autocast)
            bat_wall, bat_outs, stats = _batched(model, mixes, batch, precision, limit,
                                                 args.wait_ms / 1000)
            diff = max(float((a - b).abs().max()) for a, b in zip(seq_outs, bat_outs,
                                                                   strict=True))
            print(f"{n:>4} {stats.windows:>7} {stats.passes:>6} "
                  f"{stats.windows_per_pass:>8.2f} {seq_wall:>12.2f} "
                  f"{bat_wall:>10.2f} {seq_wall / bat_wall:>6.2f} {diff:>10.2e}", flush=True)


if __name__ == "__main__":
    main()
