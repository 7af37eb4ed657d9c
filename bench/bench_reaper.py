"""What a REAPER user waits for: the real action scripts (Lua 5.4 through lupa, against
the REAPER simulation of the tests) and a real warm `stembridge serve`.

    python bench/bench_reaper.py --model spleeter-2stems --seconds 180 --stems 2
    python bench/bench_reaper.py --model htdemucs --seconds 60 --stems 4

Prints: action -> tracks on screen (the synchronous part of the script), action -> first
region audible under the cursor, action -> all stems final, the same for a re-split (the
engine's cache), and the Lua time per defer tick (median / 99th percentile / max against
the 8 ms budget; REAPER runs the defer loop at ~30 Hz), for the monitor and, apart, for
the status window ("Show split status", open during the first split; `--no-window`
leaves it closed). The submit process start is
included (a new Python each split). Demucs models use random weights of the released size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SCRIPT = {2: "stembridge_Split selected items to vocals and instrumental.lua",
          4: "stembridge_Split selected items to stems (vocals, drums, bass, other).lua",
          6: "stembridge_Split selected items to 6 stems.lua"}


def _busy(sim) -> bool:
    """A job is saved in the project, or the monitor has jobs or peaks left (after the
    last job it goes on watching for undo: its loop does not end)."""
    jobs = [k for k in sim.project.ext.get("STEMBRIDGE", {}) if k.startswith("JOB:")]
    return bool(jobs) or (bool(sim.deferred)
                          and sim.ext_state.get(("stembridge", "busy")) != "0")


def _split(sim, script: Path, item_track) -> dict[str, float]:
    n_tracks = len(sim.tracks())
    t0 = time.perf_counter()
    sim.run_script(script)
    shown = time.perf_counter() - t0
    stem = sim.tracks()[sim.tracks().index(item_track) + 2]
    first = None
    while _busy(sim):
        sim.step()
        if first is None and any(it.takes for it in stem.items):
            first = time.perf_counter() - t0
        time.sleep(1 / 30)
    assert len(sim.tracks()) > n_tracks and not sim.messages, sim.messages
    return {"shown": shown, "first": first or float("nan"), "done": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="spleeter-2stems")
    p.add_argument("--stems", type=int, choices=(2, 4, 5, 6), default=2)
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--cursor", type=float, default=0.5, help="edit cursor, fraction of item")
    p.add_argument("--no-window", action="store_true", help="do not open the status window")
    args = p.parse_args(argv)

    from bench.bench_engine import make_input, models_dir_for
    from tests.reaper_sim.sim import ReaperSim

    with tempfile.TemporaryDirectory(prefix="stembridge-bench-reaper-") as tmp:
        work = Path(tmp)
        models = models_dir_for(args.model, work / "models")
        src = make_input(args.seconds, work, None)
        os.environ["STEMBRIDGE_RUNTIME_DIR"] = str(work / "run")
        os.environ["STEMBRIDGE_CACHE_DIR"] = str(work / "cache")
        server = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--port", "0",
                                   "--models-dir", str(models), "--output-root",
                                   str(work / "jobs"), "--preload", args.model],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not (work / "run" / "server.json").exists():
                time.sleep(0.05)
            time.sleep(2.0)  # let --preload load the model
            sim = ReaperSim(resource_path=work / "res")
            sim.ext_state[("stembridge", "engine")] = sys.executable
            sim.ext_state[("stembridge", "model")] = args.model
            sim.ext_state[("stembridge", "output_dir")] = str(work / "out")
            track = sim.new_track("song")
            item = sim.new_item(track, src, 0.0, args.seconds, name="song")
            sim.project.cursor = args.seconds * args.cursor
            stems_dir = ROOT / "clients" / "reaper" / "Stems"
            script = stems_dir / SCRIPT[args.stems]
            status = stems_dir / "stembridge_Show split status.lua"
            if not args.no_window:
                sim.run_script(status)
            first = _split(sim, script, track)
            window = [str(status) == o for o in sim.tick_owners]
            ticks = [t for t, w in zip(sim.tick_times, window, strict=True) if not w]
            cpu = [t for t, w in zip(sim.tick_cpu, window, strict=True) if not w]
            window_cpu = [t for t, w in zip(sim.tick_cpu, window, strict=True) if w]
            if not args.no_window:
                sim.run_script(status)  # closes it
            sim.tick_times.clear()
            for tr in sim.tracks():
                tr.items = [it for it in tr.items if it is item]
            item.selected = True
            again = _split(sim, script, track)
        finally:
            server.terminate()
            server.wait(10)
    ms = sorted(t * 1000 for t in ticks)
    cpu_ms = sorted(t * 1000 for t in cpu)
    print(f"{args.model}, {args.stems} stems, {args.seconds:.0f} s input, cursor at "
          f"{args.cursor:.0%} of the item")
    print(f"  action -> tracks shown      {first['shown'] * 1000:8.1f} ms")
    print(f"  action -> first region      {first['first']:8.2f} s")
    print(f"  action -> all stems final   {first['done']:8.2f} s   (re-split, cache: "
          f"{again['done']:.2f} s, first region {again['first']:.2f} s)")
    rows = [("wall", ms), ("CPU ", cpu_ms)]
    if window_cpu:
        rows.append(("CPU of the status window", sorted(t * 1000 for t in window_cpu)))
    for label, xs in rows:
        print(f"  Lua per defer tick, {label}    median {statistics.median(xs):.2f} ms, p99 "
              f"{xs[int(0.99 * (len(xs) - 1))]:.2f} ms, max {xs[-1]:.2f} ms over {len(xs)} "
              "ticks")
    print("  (budget 8 ms of work per tick; wall time includes waiting for a CPU while the "
          "engine runs on the same cores, and the simulation's Python side)")


if __name__ == "__main__":
    main()
