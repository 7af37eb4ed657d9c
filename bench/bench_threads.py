"""Thread settings under contention: one htdemucs window, idle and with a competing process.

    python bench/bench_threads.py --size full --repeats 3

For every setting (torch intra-op threads and the OpenMP wait policy, which only take
effect in a fresh process, so each setting runs in its own child) it prints the median
forward time of one window of htdemucs (random weights, `make-test`), twice: with the cores otherwise idle, and while a
competing process runs single-threaded matrix products on one core (a second job, a DAW).
The ratios are against the first setting (`default`: two threads, libgomp's default
spinning) measured in the same condition. The machine's load is printed: on a shared
machine "idle" means "no competitor of ours".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: name -> (torch threads, extra environment)
SETTINGS: dict[str, tuple[int, dict[str, str]]] = {
    "default": (2, {}),
    "passive": (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "spin-10000": (2, {"GOMP_SPINCOUNT": "10000"}),
    "one-thread": (1, {}),
    # what `engine.device.configure_threads` sets for the CLI's engine commands
    "spin-short": (2, {"GOMP_SPINCOUNT": "1000"}),
}

_CHILD = """
import json, statistics, sys, time
sys.path.insert(0, {root!r})
from engine import allocator
allocator.configure()  # as the engine's commands do
import torch
torch.set_num_threads({threads})
from pathlib import Path
from engine.models import demucs
sep = demucs.load("htdemucs", torch.device("cpu"), Path({models!r}))
x = torch.randn(1, 2, sep.valid_length(sep.segment_length))
times = []
with torch.inference_mode():
    sep.forward(x)
    for _ in range({repeats}):
        t0 = time.perf_counter()
        sep.forward(x)
        times.append(time.perf_counter() - t0)
print(json.dumps(times))
"""

_COMPETITOR = """
import torch
torch.set_num_threads(1)
a = torch.randn(1024, 1024)
while True:
    a @ a
"""


def run_setting(name: str, models: Path, repeats: int) -> float:
    """Median seconds of one window in a fresh child with setting `name`."""
    threads, extra = SETTINGS[name]
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env.update(extra)
    code = _CHILD.format(root=str(ROOT), threads=threads, models=str(models),
                         repeats=repeats)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    return statistics.median(json.loads(res.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="full", choices=("full", "tiny"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--settings", nargs="+", default=list(SETTINGS))
    args = p.parse_args(argv)
    from engine.models import testmodels

    with tempfile.TemporaryDirectory(prefix="stembridge-threads-") as tmp:
        models = Path(tmp)
        testmodels.make_test_model("htdemucs", models, size=args.size, fmt="safetensors")
        print(f"load average before: {os.getloadavg()}")
        results: dict[str, dict[str, float]] = {}
        for condition in ("idle", "contended"):
            competitor = None
            if condition == "contended":
                competitor = subprocess.Popen([sys.executable, "-c", _COMPETITOR])
                time.sleep(2.0)
            try:
                for name in args.settings:
                    results.setdefault(name, {})[condition] = run_setting(
                        name, models, args.repeats)
                    print(f"  {condition:9s} {name:11s} {results[name][condition]:.2f}s",
                          flush=True)
            finally:
                if competitor is not None:
                    competitor.terminate()
                    competitor.wait()
        print(f"load average after: {os.getloadavg()}")
        base = results[args.settings[0]]
        print("setting      idle s  (x default)  contended s  (x default)  contended/idle")
        for name in args.settings:
            r = results[name]
            print(f"{name:11s}  {r['idle']:6.2f}  ({base['idle'] / r['idle']:.2f}x)     "
                  f"{r['contended']:6.2f}      ({base['contended'] / r['contended']:.2f}x)"
                  f"     {r['contended'] / r['idle']:.2f}")


if __name__ == "__main__":
    main()
