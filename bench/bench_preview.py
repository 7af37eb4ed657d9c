"""How soon the preview plays stems, and how far separation stays ahead of its playhead.

    python bench/bench_preview.py                                   # spleeter-2stems
    python bench/bench_preview.py --model htdemucs --seconds 90 --start-at 30 --play 40

A warm server runs in this process (`StembridgeServer`, the model loaded before any
timing); a client sends `split` with ``shm: true`` and ``start_at``, as `stembridge
preview` does. The preview starts playing when ``job/started`` arrives, so from that
moment a simulated playhead advances in real time from ``--start-at``, and the job's
shared-memory index is read (every 5 ms until the stems reach the playhead, then every
50 ms) to see what `PreviewPlayer` would play. Printed, per run and as medians:

* submit -> ``job/started`` (the preview starts playing the mixture);
* submit -> the first final stem sample at the playhead, and submit -> the player's
  crossfade into the stems (final through ``block + ramp + block`` frames ahead, decided
  by `bridge.preview.crossfade`, the player's own rule);
* lead of the final stems over the playhead while playing (min / median seconds);
* the fraction of samples where the player would play the mixture, and how many times
  it falls back to it;
* separation speed: seconds of audio made final per wall second (needs >= 1x to keep up).

Demucs models use random weights of the released size (`make-test --size full`): speed
does not depend on weight values. The input is the MUSDB18 excerpt that stempeg ships,
looped to ``--seconds`` (or ``--audio FILE``). No pyo and no sound card needed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def lead_frames(ranges: list[tuple[int, int]], pos: int) -> int:
    """Frames of final audio from `pos` on (0 when `pos` is not final)."""
    for a, b in ranges:
        if a <= pos < b:
            return b - pos
    return 0


def _attach(index: str, names: list[list[str]]):
    """A `ShmReader` on blocks that this process's server created. A reader unregisters
    the blocks from the resource tracker (right in another process); here the server is
    in the same process and unregisters them again when it frees them, so register them
    back (else the tracker prints a KeyError per block)."""
    from multiprocessing import resource_tracker

    from protocol.shm import ShmReader

    reader = ShmReader(index, names)
    for name in [index, *(n for per_stem in names for n in per_stem)]:
        resource_tracker.register(f"/{name}", "shared_memory")
    return reader


def one_run(client, src: Path, model: str, start_at: float, play: float, block: int,
            ramp_ms: float) -> dict:
    from bridge.preview.crossfade import lookahead, ramp_frames, source_target
    from protocol.shm import DONE

    t0 = time.perf_counter()
    job = client.split(src, model=model, start_at=start_at, shm=True)
    started = None
    for kind, data in client.events(job, timeout=600):
        if kind == "started":
            started = data
            break
    assert started is not None and started["shm"], "the server gave no shared memory"
    t_started = time.perf_counter()
    reader = _attach(started["shm"]["index"],
                     [started["shm"]["blocks"][s] for s in started["stems"]])
    sr, frames = started["samplerate"], started["frames"]
    ahead = lookahead(block, ramp_frames(ramp_ms / 1000, sr))  # as PreviewPlayer has it
    first_final = first_fade_in = done_at = None
    leads: list[float] = []  # seconds, sampled every 50 ms once the stems were heard
    mixture_s = mixture_after_s = 0.0  # time-weighted: from the start / once heard
    fallbacks, last, was_fallback = 0, 0.0, True
    end_s = min(play, frames / sr - start_at)
    try:
        while True:
            played = time.perf_counter() - t_started
            if played >= end_s:
                break
            pos = int((start_at + played) * sr)
            snap = reader.index()
            if snap.state == DONE and done_at is None:
                done_at = played
            lead = lead_frames(snap.ranges, pos)
            if lead and first_final is None:
                first_final = played + (t_started - t0)
            in_fallback = source_target(lead, ahead, frames - pos) == 0.0  # as the player
            if was_fallback:
                mixture_s += played - last
                if first_fade_in is not None:
                    mixture_after_s += played - last
            if not in_fallback and first_fade_in is None:
                first_fade_in = played + (t_started - t0)
            if first_fade_in is not None:
                leads.append(lead / sr)
                fallbacks += in_fallback and not was_fallback
            was_fallback, last = in_fallback, played
            time.sleep(0.005 if first_fade_in is None else 0.05)
        if was_fallback:
            mixture_s += end_s - last
            if first_fade_in is not None:
                mixture_after_s += end_s - last
        snap = reader.index()
        final_s = sum(b - a for a, b in snap.ranges) / sr
        # seconds made final per wall second: up to the end of the job if it ended
        speed = frames / sr / done_at if done_at else final_s / (time.perf_counter() - t_started)
    finally:
        reader.close()
        state = client.status(job)["state"]
        if state in ("queued", "running"):
            client.cancel(job)
        client.release(job)
    heard_s = end_s - (first_fade_in - (t_started - t0)) if first_fade_in else 0.0
    return {"started": t_started - t0, "first_final": first_final,
            "fade_in": first_fade_in, "lead_min": min(leads) if leads else None,
            "lead_median": statistics.median(leads) if leads else None,
            "mixture": mixture_s / end_s,
            "mixture_after": mixture_after_s / heard_s if heard_s > 0 else None,
            "fallbacks": fallbacks, "speed": speed}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="spleeter-2stems")
    p.add_argument("--seconds", type=float, default=60.0, help="input length")
    p.add_argument("--start-at", type=float, default=20.0)
    p.add_argument("--play", type=float, default=20.0, help="seconds of simulated playback")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--audio", default=None, help="input file (default: stempeg's excerpt)")
    p.add_argument("--block", type=int, default=512, help="the player's block, frames")
    p.add_argument("--ramp-ms", type=float, default=20.0)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    from bench.bench_engine import make_input, models_dir_for
    from bridge.client import Client
    from bridge.server import ServerConfig, StembridgeServer
    from engine.config import EngineConfig
    from engine.separator import Engine

    runs = []
    with tempfile.TemporaryDirectory(prefix="stembridge-bench-preview-") as tmp:
        work = Path(tmp)
        models = models_dir_for(args.model, work / "models")
        src = make_input(args.seconds, work, args.audio)
        engine = Engine(EngineConfig(use_cache=False, models_dir=models, device=args.device))
        engine.model(args.model)
        server = StembridgeServer(ServerConfig(port=0, output_root=work / "jobs",
                                               write_discovery=False), engine).start()
        try:
            with Client(*server.address, timeout=30) as c:
                for i in range(args.repeat + 1):  # the first run warms kernels/allocator
                    r = one_run(c, src, args.model, args.start_at, args.play, args.block,
                                args.ramp_ms)
                    if i:
                        runs.append(r)
        finally:
            server.stop()
        device = str(engine.device)

    def med(key: str) -> float | None:
        values = [r[key] for r in runs if r[key] is not None]
        return statistics.median(values) if values else None

    def fmt(value: float | None, unit: str = "s") -> str:
        return "never" if value is None else f"{value:.3f}{unit}"

    print(f"[{args.model} on {device}, {args.seconds:g}s input, start at {args.start_at:g}s, "
          f"{args.play:g}s played in real time, block {args.block}, ramp {args.ramp_ms:g} ms; "
          f"{args.repeat} runs after a warm-up]")
    for i, r in enumerate(runs, 1):
        after = r["mixture_after"]
        print(f"  run {i}: started {fmt(r['started'])}, first final sample at the playhead "
              f"{fmt(r['first_final'])}, stems heard {fmt(r['fade_in'])}; then lead min "
              f"{fmt(r['lead_min'])} median {fmt(r['lead_median'])}, {r['fallbacks']} "
              f"fallback(s); mixture {r['mixture'] * 100:.1f}% of the playback"
              + ("" if after is None else f" ({after * 100:.1f}% after the stems were heard)")
              + f"; separation {r['speed']:.1f}x real time")
    print(f"  median: submit -> started {fmt(med('started'))}, submit -> first final stem "
          f"sample at the playhead {fmt(med('first_final'))}, submit -> stems heard "
          f"{fmt(med('fade_in'))}")
    after = med("mixture_after")
    print(f"          lead once heard: min {fmt(med('lead_min'))}, median "
          f"{fmt(med('lead_median'))}; mixture {med('mixture') * 100:.1f}% of the playback"
          + ("" if after is None else f" ({after * 100:.1f}% once the stems were heard)")
          + f"; separation {med('speed'):.1f}x real time")

if __name__ == "__main__":
    main()
