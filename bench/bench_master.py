"""Benchmark the mastering loop, and compare it with matchering and pedalboard in the
same run (both GPLv3: optional peers, `pip install 'stembridge[peers]'`, never imported
by the product).

    python bench/bench_master.py                 # a 4-minute song, 44.1 kHz stereo
    python bench/bench_master.py --seconds 60

The song is the real MUSDB18 excerpt that stempeg ships, looped to the length with a
different level and balance per section (verse/chorus-like dynamics); the reference for
the reference intent is the same excerpt remixed (vocals -4 dB, drums +3 dB), 60 s.
Printed: our real-time factor (audio seconds / wall seconds, goal >= 20x) and time per
stage for the streaming intent, then one table row per contestant:

- loudness error: |LUFS-I - target| (streaming: -14; reference: the reference's LUFS-I)
- TP over: true peak measured at 16x minus the -1 dBTP ceiling (> 0: overshoot)
- tonal error: mean |dB| over the six bands against the reference's balance
- LRA change: LRA(out) - LRA(in), LU
- speed: real-time factor in this process, same machine, same input

pedalboard's chain: HighpassFilter(25 Hz), Compressor(-18 dB, 2:1), Gain to the target
loudness (measured), BrickwallLimiter(threshold -1 dB, true_peak=True).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SR = 44100


def _stems() -> list[np.ndarray]:
    import stempeg

    from engine.audio import decode

    path = stempeg.example_stem_path()
    return [decode(path, stream_index=i).samples.astype(np.float64) for i in range(1, 5)]


def song(seconds: float) -> np.ndarray:
    """(2, frames): the stems remixed per 6 s section with varying levels."""
    drums, bass, other, vocals = _stems()
    rng = np.random.default_rng(0)
    parts, total = [], int(seconds * SR)
    while sum(p.shape[1] for p in parts) < total:
        g = 10 ** (rng.uniform(-10, 0, size=4) / 20)
        parts.append(g[0] * drums + g[1] * bass + g[2] * other + g[3] * vocals)
    return 0.5 * np.concatenate(parts, axis=1)[:, :total]  # -6 dB: no clipped sums


def reference(seconds: float = 60.0) -> np.ndarray:
    drums, bass, other, vocals = _stems()
    mix = 1.41 * drums + bass + other + 0.63 * vocals
    reps = math.ceil(seconds * SR / mix.shape[1])
    return np.tile(mix, (1, reps))[:, : int(seconds * SR)]


def score(name: str, x: np.ndarray, y: np.ndarray, target: float, ref_tone: dict,
          seconds: float) -> dict:
    from engine.mastering import meter
    from engine.mastering.analysis import analyze

    a, b = analyze(x, SR, curves=False), analyze(y, SR, curves=False)
    tone = b["tonal_balance_db"]
    tonal = np.mean([abs(tone[k] - ref_tone[k]) for k in tone if tone[k] is not None])
    return {"name": name, "loud_err": abs(b["loudness"]["integrated_lufs"] - target),
            "tp_over": meter.true_peak_db(y, SR, 16) + 1.0, "tonal": float(tonal),
            "lra": b["loudness"]["lra_lu"] - a["loudness"]["lra_lu"], "rtf": seconds}


def ours(x: np.ndarray, intent: str, ref: dict | None) -> tuple[np.ndarray, float, dict]:
    from engine.mastering.master import master
    from engine.mastering.presets import resolve

    kw = {"reference_lufs": ref["loudness"]["integrated_lufs"]} if ref else {}
    t0, c0 = time.perf_counter(), time.process_time()
    r = master(x, SR, resolve(intent, **kw), reference=ref)
    wall = time.perf_counter() - t0
    r.timings["cpu_seconds"] = round(time.process_time() - c0, 3)
    return r.samples.astype(np.float64), wall, r.timings


def matchering_run(x: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, float] | None:
    try:
        import matchering as mg
    except ImportError:
        return None
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        t, r, o = (Path(tmp) / n for n in ("t.wav", "r.wav", "o.wav"))
        sf.write(t, x.T, SR, subtype="FLOAT")
        sf.write(r, ref.T, SR, subtype="FLOAT")
        t0 = time.perf_counter()
        mg.process(target=str(t), reference=str(r), results=[mg.Result(str(o), "FLOAT")])
        wall = time.perf_counter() - t0
        y, _ = sf.read(o, dtype="float64")
    return y.T, wall


def pedalboard_run(x: np.ndarray, target: float) -> tuple[np.ndarray, float] | None:
    try:
        import pedalboard as pb
    except ImportError:
        return None
    from engine.mastering import meter

    t0 = time.perf_counter()
    pre = pb.Pedalboard([pb.HighpassFilter(25.0), pb.Compressor(-18.0, 2.0, 30.0, 200.0)])
    y = pre(x.astype(np.float32), SR)
    gain = target - meter.integrated(y, SR)
    board = pb.Pedalboard([pb.Gain(gain), pb.BrickwallLimiter(ceiling_db=-1.0,
                                                              true_peak=True)])
    out = board(y, SR)
    return out.astype(np.float64), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=240.0)
    args = p.parse_args(argv)
    from engine.mastering.analysis import TARGET_CURVE, analyze

    x = song(args.seconds)
    ref_audio = reference()
    ref = analyze(ref_audio, SR, curves=False)
    ours(x[:, : 10 * SR], "streaming", None)  # warm-up: imports, filter designs
    y, wall, timings = ours(x, "streaming", None)
    print(f"input: {args.seconds:.0f} s stereo {SR} Hz (the stempeg excerpt, remixed per "
          "section)")
    print(f"ours, streaming: {wall:.2f} s wall = {args.seconds / wall:.1f}x real time; "
          f"{timings['cpu_seconds']:.2f} s CPU = {args.seconds / timings['cpu_seconds']:.1f}x "
          "(CPU time of this process: less distorted by other load on the machine)")
    print(f"load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for k, v in timings.items():
        print(f"  {k:<14} {v:8.3f} s")
    rows = [score("ours streaming", x, y, -14.0, TARGET_CURVE, args.seconds / wall)]
    y, wall, _ = ours(x, "reference", ref)
    ref_lufs = ref["loudness"]["integrated_lufs"]
    rows.append(score("ours reference", x, y, ref_lufs, ref["tonal_balance_db"],
                      args.seconds / wall))
    got = matchering_run(x, ref_audio)
    if got is not None:
        rows.append(score("matchering reference", x, got[0], ref_lufs, ref["tonal_balance_db"],
                          args.seconds / got[1]))
    got = pedalboard_run(x, -14.0)
    if got is not None:
        rows.append(score("pedalboard streaming", x, got[0], -14.0, TARGET_CURVE,
                          args.seconds / got[1]))
    print()
    print("| contestant | loudness error (LU) | TP over -1 dBTP at 16x (dB) | tonal error (dB) "
          "| LRA change (LU) | speed (x real time) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['loud_err']:.2f} | {r['tp_over']:+.2f} | {r['tonal']:.2f} "
              f"| {r['lra']:+.2f} | {r['rtf']:.1f} |")
    print("\ntonal error: streaming rows against the default target curve, reference rows "
          "against the reference's balance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
