"""`stembridge eval`: separation quality of models with BSS Eval v4, side by side.

    stembridge eval --model NAME[,NAME...] --musdb PATH|builtin [--subset test] [--tracks N]
        [--out DIR] [--compare BASELINE.json [--tolerance DB]] [--no-cache] [-q]

Writes ``<out>/eval.json`` (every figure: per track, stem, metric and model, with the
frames, and the aggregate), ``<out>/eval.md`` (tables) and ``<out>/eval.png`` (SDR per
stem and model; needs matplotlib, the 'plot' extra). With ``--compare`` it then fails
with ``quality_regression`` naming each stem whose SDR fell by more than the tolerance.
The engine is imported only after the arguments are checked.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

from bridge.commands import evalreport, report
from protocol import settings
from protocol.errors import ErrorCode, exit_status

#: Default `--tolerance`, dB of SDR.
TOLERANCE_DB = 0.1


def add_parser(sub: Any) -> None:
    e = sub.add_parser("eval", help="measure separation quality (BSS Eval v4: SDR, SIR, "
                       "SAR, ISR) on MUSDB18 or a folder of tracks")
    e.add_argument("--model", required=True, type=_models_arg, metavar="NAME[,NAME...]",
                   help="models to evaluate side by side (names as `split --model` takes)")
    e.add_argument("--musdb", required=True, metavar="PATH",
                   help="MUSDB18 (.stem.mp4) or MUSDB18-HQ folder, a folder of "
                   "<track>/mixture.wav + <stem>.wav, or 'builtin' (the 6 s excerpt that "
                   "stempeg ships)")
    e.add_argument("--subset", default="test", help="sub-folder to read when PATH has one "
                   "(MUSDB18: train or test; default test)")
    e.add_argument("--tracks", type=_positive_int, default=None, metavar="N",
                   help="only the first N tracks (by name)")
    e.add_argument("--out", type=Path, default=Path("eval"),
                   help="output folder for eval.json, eval.md, eval.png (default ./eval)")
    e.add_argument("--compare", type=Path, default=None, metavar="BASELINE.json",
                   help="fail when a stem's SDR fell below this earlier eval.json's")
    e.add_argument("--tolerance", type=float, default=TOLERANCE_DB, metavar="DB",
                   help=f"SDR loss allowed by --compare, dB (default {TOLERANCE_DB})")
    e.add_argument("--device", default=settings.device(),
                   help="auto (CUDA, MPS, else CPU), cpu, cuda, cuda:N, mps")
    e.add_argument("--precision", default=settings.precision(),
                   choices=("auto", "fp32", "bf16", "fp16"))
    e.add_argument("--models-dir", type=Path, default=None, help="model weights folder")
    e.add_argument("--cache-dir", type=Path, default=None, help="estimate cache (default "
                   "<user cache>/eval)")
    e.add_argument("--no-cache", action="store_true",
                   help="neither read nor write cached estimates and scores")
    e.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _models_arg(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError("name one or more different models, e.g. "
                                         "htdemucs,spleeter-2stems")
    return names


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return value


class EvalBar:
    """One line on stderr: steps (track x model) done, the current one, percent, ETA;
    redrawn in place on a TTY, printed at each step's start and end otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.line = report.StatusLine(enabled, clear=True)

    def __call__(self, p: Any) -> None:
        total = p.total or 0
        frac = (p.done + p.step_fraction) / total if total else 0.0
        eta = "--" if p.eta is None else f"{p.eta:5.1f}s"
        self.line.show(f"eval [{report.bar(frac)}] {p.done}/{total or '?'} {p.track} | "
                       f"{p.model}: {p.phase} {frac * 100:5.1f}% ETA {eta}",
                       (p.done, p.phase))

    def close(self) -> None:
        self.line.close()


def cmd_eval(args: argparse.Namespace) -> int:
    """Run the evaluation, write its files, compare; the exit status."""
    if args.tolerance < 0 or not math.isfinite(args.tolerance):
        report.error(ErrorCode.INVALID_ARGUMENT, "--tolerance is a loss in dB, 0 or more.")
        return exit_status(ErrorCode.INVALID_ARGUMENT)
    baseline = None
    if args.compare is not None:
        try:
            baseline = evalreport.read_baseline(args.compare)
        except OSError as exc:
            report.error(ErrorCode.INPUT_MISSING,
                         f"Cannot read the baseline '{args.compare}': {exc.strerror or exc}.")
            return exit_status(ErrorCode.INPUT_MISSING)
        except ValueError as exc:
            report.error(ErrorCode.INVALID_ARGUMENT,
                         f"The baseline '{args.compare}' is not usable: {exc}.")
            return exit_status(ErrorCode.INVALID_ARGUMENT)
    result = _run(args)
    _write(result, args.out)
    print(evalreport.markdown(result), end="")
    if baseline is None:
        return 0
    return _check(result, baseline, args)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from engine.config import EngineConfig
    from engine.evaluation import evaluate_models, find_tracks, load_track
    from engine.evaluation.tracks import BUILTIN
    from engine.separator import Engine

    paths = find_tracks(args.musdb, args.subset, args.tracks)
    engine = Engine(EngineConfig(device=args.device, precision=args.precision,
                                 use_cache=False, models_dir=args.models_dir))
    builtin = str(args.musdb) == BUILTIN
    tracks = (load_track(p, engine.config.limits, builtin=builtin) for p in paths)
    bar = EvalBar(not args.quiet)
    t0 = time.perf_counter()
    try:
        result = evaluate_models(args.model, tracks, engine=engine, cache_dir=args.cache_dir,
                                 use_cache=not args.no_cache, total=len(paths),
                                 on_progress=bar)
    finally:
        bar.close()
    result["data_set"] = {"path": str(args.musdb) if builtin else str(Path(args.musdb).resolve()),
                          "subset": args.subset, "tracks": len(paths)}
    result["wall_seconds"] = round(time.perf_counter() - t0, 3)
    return result


def _write(result: dict[str, Any], out: Path) -> None:
    """eval.json, eval.md and (with matplotlib) eval.png into `out`, each atomically."""
    from bridge.commands.split import make_folder
    from engine.errors import OutputError
    from protocol.files import write_bytes_atomic, write_json_atomic

    make_folder(out)
    try:
        write_json_atomic(out / "eval.json", evalreport.to_json(result))
        write_bytes_atomic(out / "eval.md", evalreport.markdown(result).encode("utf-8"))
    except OSError as exc:
        raise OutputError(f"Cannot write into '{out}': {exc.strerror or exc}.") from None
    written = ["eval.json", "eval.md"]
    try:
        evalreport.plot(result, out / "eval.png")
        written.append("eval.png")
    except ImportError:
        report.warning("no eval.png: the plot needs matplotlib, pip install "
                       "'stembridge[plot]'.")
    except OSError as exc:
        raise OutputError(f"Cannot write '{out / 'eval.png'}': {exc.strerror or exc}.") from None
    print(f"stembridge: wrote {', '.join(written)} in {out}", file=sys.stderr)


def _check(result: dict[str, Any], baseline: dict[str, Any], args: argparse.Namespace) -> int:
    changes = evalreport.compare(result, baseline)
    if not changes:
        report.error(ErrorCode.INVALID_ARGUMENT,
                     f"The baseline '{args.compare}' has no SDR for any evaluated model and "
                     f"stem (it has {', '.join(baseline) or 'no models'}); compare runs of the "
                     "same models.")
        return exit_status(ErrorCode.INVALID_ARGUMENT)
    lost = evalreport.regressions(changes, args.tolerance)
    print(f"\nAgainst {args.compare} (tolerance {args.tolerance:g} dB SDR):")
    for change in changes:
        mark = "  LOST" if change in lost else ""
        print(f"  {evalreport.describe(change)}{mark}")
    if not lost:
        return 0
    for change in lost:
        report.error(ErrorCode.QUALITY_REGRESSION,
                     f"{evalreport.describe(change)}: more than the {args.tolerance:g} dB "
                     "allowed.")
    return exit_status(ErrorCode.QUALITY_REGRESSION)
