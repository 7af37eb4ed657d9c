"""Warm server vs cold process, on the same input.

    python bench/bench_server.py --model spleeter-2stems --seconds 30
    python bench/bench_server.py --model htdemucs --seconds 30

Prints, for a server that already holds the model: submit -> first `job/region` push and
submit -> `job/done`; and for a cold `stembridge split` process (new interpreter, model
load, no cache): process start -> exit; and how fast a split the server refuses before
accepting it (a missing file) is answered. The ratio is what a DAW user gains from the warm
engine. Demucs models use random weights of the released size (`make-test --size full`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="spleeter-2stems")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)

    from bench.bench_engine import make_input, models_dir_for
    from bridge.client import Client
    from bridge.server import ServerConfig, StembridgeServer
    from engine.config import EngineConfig
    from engine.separator import Engine

    with tempfile.TemporaryDirectory(prefix="stembridge-bench-server-") as tmp:
        work = Path(tmp)
        models = models_dir_for(args.model, work / "models")
        src = make_input(args.seconds, work, None)
        engine = Engine(EngineConfig(use_cache=False, models_dir=models))
        engine.model(args.model)
        server = StembridgeServer(ServerConfig(port=0, output_root=work / "jobs",
                                               write_discovery=False), engine).start()
        warm_first, warm_done, refused = [], [], []
        try:
            with Client(*server.address, timeout=30) as c:
                from bridge.client import ClientError

                for _ in range(20):  # checks before accepting: answered without a job
                    t0 = time.perf_counter()
                    try:
                        c.split(work / "missing.wav", model=args.model)
                    except ClientError:
                        refused.append(time.perf_counter() - t0)
                for _ in range(args.repeat + 1):  # the first run warms kernels/allocator
                    t0 = time.perf_counter()
                    job = c.split(src, model=args.model)
                    first = None
                    for kind, _data in c.events(job, timeout=600):
                        if kind == "region" and first is None:
                            first = time.perf_counter() - t0
                    warm_first.append(first)
                    warm_done.append(time.perf_counter() - t0)
        finally:
            server.stop()
        warm_first, warm_done = warm_first[1:], warm_done[1:]
        cold = []
        env = {**os.environ, "STEMBRIDGE_CACHE_DIR": str(work / "cold-cache")}
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "bridge", "split", str(src), "--model",
                            args.model, "--models-dir", str(models), "--no-cache", "-q",
                            "--out", str(work / "cold")], check=True, env=env,
                           stdout=subprocess.DEVNULL)
            cold.append(time.perf_counter() - t0)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    print(f"[{args.model}, {args.seconds:g}s input, median of {args.repeat}]")
    print(f"  warm server: submit -> first region {med(warm_first):.2f}s, "
          f"submit -> done {med(warm_done):.2f}s")
    print(f"  cold `stembridge split`: {med(cold):.2f}s")
    print(f"  a refused split (missing file) answered in {med(refused) * 1000:.2f} ms")
    print(f"  ratios: cold / warm-first-region {med(cold) / med(warm_first):.1f}x, "
          f"cold / warm-done {med(cold) / med(warm_done):.1f}x")


if __name__ == "__main__":
    main()
