"""`stembridge ensemble train`: train a StemMixer (a learned blend of two models).

    stembridge ensemble train --members A,B --musdb PATH --out DIR [--epochs 100]
                              [--segment 7] [--seed 0] [--batch-size 8] [--device cpu]
                              [--phase complex|member_a] [--context 1] [--no-freq-feature]
                              [--n-fft 2048] [--hop 512] [--cache DIR]
                              [--subset train] [--tracks N] [--models-dir DIR]

PATH is a data set as `stembridge eval` reads it: MUSDB18 (``.stem.mp4``), MUSDB18-HQ or
any folder of ``<track>/mixture.wav`` + ``<stem>.wav`` (its --subset folder, default
``train``, when it has one), or ``builtin`` (one excerpt: too few tracks to train on alone). Both
members' estimates are computed once and cached (``DIR/estimates`` unless --cache), the
mixer is trained and written to DIR (``stemmixer.safetensors``, ``stemmixer.json``,
``loss.png`` when matplotlib is installed). Use it as the model ``ensemble:DIR``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from bridge.commands import report


def add_parser(sub: Any) -> None:
    e = sub.add_parser("ensemble", help="train a learned ensemble (StemMixer) of two models")
    esub = e.add_subparsers(dest="ensemble_command", required=True)
    t = esub.add_parser("train", help="train a StemMixer on a folder of multitrack songs")
    t.add_argument("--members", required=True, help="two model names, e.g. htdemucs,mdx-voc-ft"
                   " (the first gives the phase with --phase member_a)")
    t.add_argument("--musdb", required=True, metavar="PATH",
                   help="MUSDB18 or MUSDB18-HQ folder, a folder of <track>/mixture.wav + "
                        "<stem>.wav, or a .stem.mp4 file")
    t.add_argument("--subset", default="train", help="sub-folder to read when PATH has one "
                   "(MUSDB18: train or test)")
    t.add_argument("--tracks", type=int, default=None, metavar="N",
                   help="only the first N tracks (by name)")
    t.add_argument("--models-dir", type=Path, default=None, help="the members' weights folder")
    t.add_argument("--out", required=True, type=Path, metavar="DIR", help="the mixer's folder")
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument("--segment", type=float, default=7.0, help="training crop, seconds")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--patience", type=int, default=10, help="early stopping, epochs")
    t.add_argument("--val-fraction", type=float, default=0.2)
    t.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (members and mixer)")
    t.add_argument("--phase", choices=("complex", "member_a"), default="complex")
    t.add_argument("--context", type=int, default=1,
                   help="frames the first layer sees (odd; 1: the paper's 1x1)")
    t.add_argument("--no-freq-feature", action="store_true",
                   help="the paper's 4 input channels only (no frequency channel)")
    t.add_argument("--n-fft", type=int, default=2048)
    t.add_argument("--hop", type=int, default=512)
    t.add_argument("--cache", type=Path, default=None,
                   help="where the members' estimates are cached (default DIR/estimates)")
    t.add_argument("--quiet", "-q", action="store_true", help="no progress line")


def _line(quiet: bool, text: str, end: bool = False) -> None:
    if not quiet:
        sys.stderr.write("\r" + text.ljust(78) + ("\n" if end else ""))
        sys.stderr.flush()


def plot(history: list[dict[str, float]], out: Path) -> Path | None:
    """The training and validation loss per epoch into `out` (None without matplotlib)."""
    from bridge.commands.report import pyplot, save_png

    try:
        plt = pyplot()
    except ImportError:
        return None

    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], label="training")
    ax.plot(epochs, [h["val_loss"] for h in history], label="validation")
    ax.set(xlabel="epoch", ylabel="L1 spectrogram loss", title="StemMixer training",
           yscale="log")
    ax.legend()
    return save_png(fig, out)


def cmd_ensemble(args: argparse.Namespace) -> int:
    from engine import __version__
    from engine.config import Limits
    from engine.device import select_device
    from engine.errors import InvalidArgumentError
    from engine.evaluation.tracks import BUILTIN
    from engine.models import catalog, stemmixer, trackset, training
    from protocol import settings

    members = [m.strip() for m in args.members.split(",") if m.strip()]
    if len(members) != 2:
        raise InvalidArgumentError(f"--members names two models, e.g. htdemucs,mdx-voc-ft, "
                                   f"not {args.members!r}.")
    data = Path(args.musdb)
    if data.resolve() in (args.out.resolve(), *args.out.resolve().parents):
        raise InvalidArgumentError("--out must not lie inside the --musdb folder (the "
                                   "training data is only read).")
    device = select_device(args.device)
    out: Path = args.out
    cache = args.cache or out / "estimates"
    t0 = time.perf_counter()
    models_root = args.models_dir or settings.models_dir()
    stems, rate, tracks = trackset.prepare(
        members, args.musdb, cache, models_root, device, Limits(), args.subset, args.tracks,
        progress=lambda i, n, name: _line(args.quiet, f"estimates {i}/{n} {name}", i == n))
    config = stemmixer.MixerConfig(
        (members[0], members[1]), stems, rate, args.n_fft, args.hop, args.phase,
        not args.no_freq_feature, args.context)
    opts = training.TrainSettings(args.epochs, args.segment, args.batch_size, 1e-3, args.seed,
                                  args.patience, 5, args.val_fraction, str(device))

    def on_epoch(p: training.Progress) -> None:
        eta = p.elapsed / p.epoch * (p.epochs - p.epoch)
        _line(args.quiet, f"epoch {p.epoch}/{p.epochs} train {p.train_loss:.5f} val "
              f"{p.val_loss:.5f} lr {p.lr:.0e} ETA {eta:.0f} s (at most)")

    result = training.train(config, tracks, opts, on_epoch)
    _line(args.quiet, f"best epoch {result.best_epoch}: validation loss "
          f"{result.best_val_loss:.5f}", True)
    facts: dict[str, Any] = {
        "members": [{"name": m, "version": catalog.get_spec(m).version} for m in members],
        "engine_version": __version__,
        "training": {"data": args.musdb if args.musdb == BUILTIN else str(data.resolve()),
                     "subset": args.subset, "tracks": len(tracks),
                     "track_names": [t.name for t in tracks],
                     "train_tracks": result.train_tracks,
                     "val_tracks": result.val_tracks, "epochs_run": len(result.history),
                     "loss": "L1 on the complex spectrogram", "seed": args.seed,
                     "settings": {k: getattr(opts, k) for k in opts.__dataclass_fields__},
                     "seconds": round(time.perf_counter() - t0, 1),
                     "history": result.history},
        "validation": training.validation_figures(result, config, tracks),
    }
    digest = stemmixer.save(out, config, result.nets, facts)
    png = plot(result.history, out / "loss.png")
    print(f"StemMixer written to {out} (sha256 {digest[:12]}...); "
          f"split with --model ensemble:{out.resolve()}")
    key, table = training.sdr_table(facts["validation"])
    what = "BSS Eval v4 SDR" if key == "sdr_bss_eval_v4" else "global SDR, not BSS Eval"
    for stem, row in table.items():
        print(f"  {stem:<12} mixer {_db(row['mixer'])}   {members[0]} {_db(row['member_a'])}"
              f"   {members[1]} {_db(row['member_b'])}   (validation, {what})")
    if png is None:
        report.warning("matplotlib is not installed: no loss curve was drawn.")
    return 0


def _db(value: float | str | None) -> str:
    return f"{value:6.2f} dB" if isinstance(value, float) else f"{value!s:>6} dB"
