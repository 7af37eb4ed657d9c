"""`stembridge master`: master audio files in this process.

    stembridge master FILE... [--preset streaming|loud|reference] [--platform NAME]
        [--reference REF] [--target-lufs X] [--true-peak-db X] [--amount F] [--stem-aware]
        [--format wav|flac|mp3] [--bit-depth 16|24|32f] [--mp3 cbr320|v0]
        [--sample-rate 44100|48000] [--out DIR] [--no-cache] [--json] [-q]

Each input gets ``<out>/<name>.master.<ext>`` and ``<out>/<name>.master.json``.
``--request FILE`` serves a request file instead (`bridge.commands.masterrequest`). Missing
files are reported at once; the engine is imported only after the arguments are checked.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bridge.commands import report
from protocol.errors import ErrorCode, exit_status

PRESETS = ("streaming", "loud", "reference")
PLATFORMS = ("spotify", "apple", "youtube", "amazon", "club")


def add_parser(sub: Any) -> None:
    m = sub.add_parser("master", help="master audio files (loudness, tone, true peak)")
    m.add_argument("files", nargs="*", type=Path, help="input audio files (never modified)")
    m.add_argument("--request", type=Path, default=None, metavar="JSON",
                   help="master (or analyze) the file a JSON request file names, with "
                   "progress and reply files beside it (for clients without sockets, "
                   "e.g. the REAPER scripts)")
    m.add_argument("--preset", choices=PRESETS, default=None,
                   help="streaming (-14 LUFS, -1 dBTP; default), loud (about -8 LUFS) or "
                   "reference (match --reference)")
    m.add_argument("--platform", choices=PLATFORMS, default=None,
                   help="a delivery target: spotify/youtube -14/-1, apple -16/-1, "
                   "amazon -14/-2, club -8/-0.5 (LUFS/dBTP)")
    m.add_argument("--reference", type=Path, default=None, metavar="REF",
                   help="match this track's loudness, tonal balance and width")
    m.add_argument("--target-lufs", type=float, default=None, metavar="X")
    m.add_argument("--true-peak-db", type=float, default=None, metavar="X",
                   help="true-peak ceiling in dBTP")
    m.add_argument("--amount", type=float, default=1.0, metavar="F",
                   help="strength of the corrections, 0..1 (default 1)")
    m.add_argument("--stem-aware", action="store_true",
                   help="separate vocals first and keep the voice's balance (slower)")
    m.add_argument("--format", choices=("wav", "flac", "mp3"), default="wav")
    m.add_argument("--bit-depth", choices=("16", "24", "32f"), default="24",
                   help="PCM bits with TPDF dither, or 32f float (WAV only)")
    m.add_argument("--mp3", choices=("cbr320", "v0"), default="cbr320", dest="mp3_mode")
    m.add_argument("--sample-rate", type=int, choices=(44100, 48000), default=None)
    m.add_argument("--out", type=Path, default=Path("masters"),
                   help="output folder (default ./masters)")
    m.add_argument("--no-cache", action="store_true")
    m.add_argument("--json", action="store_true", help="print the reports as a JSON list")
    m.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


class _Bar:
    """A one-line progress bar on stderr (redrawn on a TTY, every ~25 % otherwise)."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self.line = report.StatusLine(enabled)

    def __call__(self, frac: float, what: str) -> None:
        text = f"{self.label} [{report.bar(frac)}] {frac * 100:5.1f}% {what}"
        self.line.show(text.ljust(78), int(frac * 4))

    def close(self) -> None:
        self.line.close()


def _options(args: argparse.Namespace) -> Any:
    from engine.mastering.job import MasterOptions

    preset = args.preset or ("reference" if args.reference is not None else "streaming")
    return MasterOptions(
        preset=preset, platform=args.platform, reference=args.reference,
        target_lufs=args.target_lufs, true_peak_db=args.true_peak_db, amount=args.amount,
        stem_aware=args.stem_aware, format=args.format, bit_depth=args.bit_depth,
        mp3_mode=args.mp3_mode, sample_rate=args.sample_rate, out_dir=args.out,
        use_cache=not args.no_cache)


def summary(rep: dict[str, Any]) -> str:
    """``name: -9.8 LUFS -> -14.0 LUFS, 0.2 -> -1.0 dBTP, LRA 6.1 -> 5.4 LU (2 passes)``."""
    def fmt(v: float | None, unit: str) -> str:
        return "--" if v is None else f"{v:.1f}{unit}"

    a, b = rep["input_analysis"], rep["output_analysis"]
    la, lb = a["loudness"], b["loudness"]
    ia = la["integrated_lufs"] if la["integrated_defined"] else la["ungated_lufs"]
    ib = lb["integrated_lufs"] if lb["integrated_defined"] else lb["ungated_lufs"]
    return (f"{Path(rep['output']['path']).name}: {fmt(ia, ' LUFS')} -> {fmt(ib, ' LUFS')}, "
            f"{fmt(a['peaks']['true_peak_dbtp'], '')} -> {fmt(b['peaks']['true_peak_dbtp'], ' dBTP')}, "
            f"LRA {fmt(la['lra_lu'], '')} -> {fmt(lb['lra_lu'], ' LU')} "
            f"({len(rep['passes'])} passes{', cached' if rep.get('cache') else ''})")


def cmd_master(args: argparse.Namespace) -> int:
    if args.request is not None:
        from bridge.commands.masterrequest import run_request

        return run_request(args.request)
    if not args.files:
        report.error(ErrorCode.INVALID_ARGUMENT, "Name at least one audio file to master.")
        return 2
    missing = [p for p in args.files if not p.is_file()]
    if args.reference is not None and not args.reference.is_file():
        missing.append(args.reference)
    for p in missing:
        report.error(ErrorCode.INPUT_MISSING, f"'{p}' does not exist or is not a file.")
    if missing:
        return exit_status(ErrorCode.INPUT_MISSING)
    if args.preset == "reference" and args.reference is None:
        report.error(ErrorCode.INVALID_ARGUMENT, "--preset reference needs --reference REF.")
        return 2
    from engine.errors import StembridgeError
    from engine.mastering.job import master_file

    options = _options(args)
    engine = None
    if options.stem_aware:
        from engine.config import EngineConfig
        from engine.separator import Engine

        engine = Engine(EngineConfig())
    status, reports = 0, []
    for path in args.files:
        bar = _Bar(path.name, not args.quiet and not args.json)
        try:
            result = master_file(path, options, engine=engine, on_progress=bar)
        except StembridgeError as err:
            bar.close()
            report.error(err.code, str(err), where=str(path))
            status = status or err.exit_code
            continue
        bar.close()
        reports.append(result.report)
        for w in result.report["warnings"]:
            report.warning(f"{path.name}: {w}")
        if not args.json:
            print(summary(result.report))
    if args.json:
        print(json.dumps(reports, indent=2))
    return status
