"""The StemMixer's controlled experiment at a larger size, and its cost over its members.

    python bench/bench_stemmixer.py                      # the experiment table
    python bench/bench_stemmixer.py --train 12 --test 4 --seconds 4 --epochs 40
    python bench/bench_stemmixer.py --cost --cost-seconds 20 --size full

Experiment: synthetic songs (`engine.models.synthetic`: harmonic vocals, percussive
drums, low bass, noise-like other, one seed per song) and two synthetic members with
complementary errors (A leaks the other stems into its low band, B into its high band).
Mixers of several variants are trained on `--train` songs and scored on `--test` held-out
songs with BSS Eval v4 (museval, 1 s windows, median over frames, then median over
songs), against both members and every fixed rule. It shows that the machinery learns a
per-frequency choice; it says nothing about real music.

Cost (`--cost`): random-weight test models of htdemucs and mdx-voc-ft (`--size full`: the
released sizes), served as ``ensemble:DIR`` with an untrained mixer of the default
settings (2048/512, frequency channel, context 1: its cost does not depend on its
weights). In one
process, fp32, on one torch thread count: the members alone (their whole-file passes),
the mixer's pass over their outputs, the ratio mixer / members, and the served
ensemble's time to first region. Machines are noisy: compare the ratios, not times across
runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANTS = (  # label, phase, freq feature, context
    ("paper (complex blend)", "complex", False, 1),
    ("paper, A's phase", "member_a", False, 1),
    ("+ frequency (default)", "complex", True, 1),
    ("+ frequency, A's phase", "member_a", True, 1),
    ("+ frequency + context 3", "complex", True, 3),
)


def experiment(args: argparse.Namespace) -> None:
    import torch

    from engine.models import stemmixer as sm
    from engine.models import synthetic as syn
    from engine.models import training as tr

    rate = args.rate

    def song(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = syn.song(seed, args.seconds, rate)
        return (s, *syn.members(s, rate))

    train = [tr.TrackData(f"song{i}", *song(i)) for i in range(args.train)]
    test = [song(1000 + i) for i in range(args.test)]
    sdr = syn.framewise_sdr if args.fast_sdr else syn.museval_sdr

    def score(make: Any) -> np.ndarray:
        return np.median([sdr(s, make(a, b), rate) for s, a, b in test], 0)

    rows: list[tuple[str, np.ndarray, str]] = [
        ("member A", score(lambda a, b: a), ""), ("member B", score(lambda a, b: b), "")]
    for rule in syn.FIXED_RULES:
        rows.append((f"fixed {rule}", score(lambda a, b, r=rule: syn.fixed_rule(r, a, b)), ""))
    best_member = np.maximum(rows[0][1], rows[1][1])
    best_fixed = np.max([r[1] for r in rows[2:]], 0)
    for label, phase, freq, ctx in VARIANTS:
        cfg = sm.MixerConfig(("A", "B"), syn.STEMS, rate, args.n_fft, args.n_fft // 4, phase,
                             freq, ctx)
        t0 = time.process_time()
        res = tr.train(cfg, train, tr.TrainSettings(
            epochs=args.epochs, segment=args.segment, batch_size=args.batch_size,
            seed=args.seed, patience=args.epochs))
        cpu = time.process_time() - t0
        rows.append((f"StemMixer {label}", score(
            lambda a, b, c=cfg, n=res.nets: sm.mix_track(n, c, torch.from_numpy(a),
                                                         torch.from_numpy(b)).numpy()),
            f"best epoch {res.best_epoch}, {cpu:.0f} s CPU"))
    print(f"\n{args.train} training songs, {args.test} held-out songs of {args.seconds} s at "
          f"{rate} Hz; STFT {args.n_fft}/{args.n_fft // 4}; {args.epochs} epochs, seed "
          f"{args.seed}; SDR: {'framewise (= museval v4 SDR)' if args.fast_sdr else 'museval v4'}"
          ", median over 1 s frames, then over songs (dB)\n")
    print("| estimate | " + " | ".join(syn.STEMS) + " | notes |")
    print("|---|" + "---|" * (len(syn.STEMS) + 1))
    for name, vals, note in rows:
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in vals) + f" | {note} |")
    print("\nmargins of each StemMixer over the better member / the best fixed rule (dB):")
    for name, vals, _ in rows[2 + len(syn.FIXED_RULES):]:
        print(f"  {name}: " + ", ".join(
            f"{s} {v - m:+.2f}/{v - f:+.2f}" for s, v, m, f in
            zip(syn.STEMS, vals, best_member, best_fixed, strict=True)))


def cost(args: argparse.Namespace) -> None:
    import torch

    from engine.chunking import ChunkStats, iter_separate, separate
    from engine.models import stemmixer as sm
    from engine.models import testmodels
    from tests.conftest import music_like

    torch.set_num_threads(args.threads)
    members = ("htdemucs", "mdx-voc-ft")
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        testmodels.make_test_model("htdemucs", root, size=args.size)
        testmodels.make_test_mdx("mdx-voc-ft", root, size=args.size)
        cfg = sm.MixerConfig(members, ("vocals", "instrumental"), 44100)
        torch.manual_seed(0)
        sm.save(root / "mixer", cfg, sm.build(cfg).eval(), {})
        mix = torch.from_numpy(music_like(args.cost_seconds, seed=1))
        model = sm.load(f"ensemble:{root / 'mixer'}", cpu, root)
        with torch.no_grad():
            separate(model, mix[:, : 44100 * 2])  # warm-up
            t0 = time.perf_counter()
            outs = [separate(m, mix) for m in model.members]
            members_s = time.perf_counter() - t0
            maps = model.maps
            ests = [torch.stack([o[g].sum(0) for g in mp]) for o, mp in zip(outs, maps,
                                                                          strict=True)]
            t0 = time.perf_counter()
            sm.mix_track(model.mixer, cfg, ests[0], ests[1])  # as served (fused)
            mixer_s = time.perf_counter() - t0
            stats = ChunkStats()
            t0 = time.perf_counter()
            for _ in iter_separate(model, mix, stats=stats):
                pass
            served_s = time.perf_counter() - t0
    print(f"\n{args.cost_seconds} s stereo at 44.1 kHz, size {args.size}, fp32, "
          f"{args.threads} torch thread(s):")
    print(f"  members' whole-file passes  {members_s:8.2f} s")
    print(f"  mixer over their outputs    {mixer_s:8.2f} s   ratio mixer/members "
          f"{mixer_s / members_s:.3f} (goal <= 0.05)")
    print(f"  served ensemble:DIR         {served_s:8.2f} s   ratio served/members "
          f"{served_s / members_s:.3f}; first region after "
          f"{stats.first_region_seconds or float('nan'):.2f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=10)
    p.add_argument("--test", type=int, default=4)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--rate", type=int, default=8000)
    p.add_argument("--n-fft", type=int, default=256)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--segment", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fast-sdr", action="store_true",
                   help="the framewise SDR (equal to museval's, much cheaper)")
    p.add_argument("--no-experiment", action="store_true")
    p.add_argument("--cost", action="store_true", help="also measure the mixer's cost")
    p.add_argument("--cost-seconds", type=float, default=20.0)
    p.add_argument("--size", choices=("tiny", "full"), default="tiny")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if not args.no_experiment:
        experiment(args)
    if args.cost:
        cost(args)


if __name__ == "__main__":
    main()
