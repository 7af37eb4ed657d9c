"""`stembridge analyze`: loudness, peaks, tone and stereo of audio files, as a table.

    stembridge analyze FILE... [--json] [--plot OUT.png]

`--plot` draws the momentary and short-term loudness over time (with the -14 LUFS
streaming line) and the six-band balance against the target curve, with matplotlib.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bridge.commands import report
from protocol.errors import ErrorCode, exit_status


def add_parser(sub: Any) -> None:
    a = sub.add_parser("analyze", help="measure loudness (LUFS, LRA), true peak, tone, width")
    a.add_argument("files", nargs="+", type=Path, help="audio files (only read)")
    a.add_argument("--json", action="store_true", help="print the analyses as a JSON list")
    a.add_argument("--plot", type=Path, default=None, metavar="OUT.png",
                   help="draw the loudness curves and the tonal balance (needs matplotlib)")


def _v(value: float | None, fmt: str = "{:.1f}") -> str:
    return "--" if value is None else fmt.format(value)


def table(name: str, a: dict[str, Any]) -> str:
    """The analysis as aligned ``label  value`` lines."""
    lo, pk, st = a["loudness"], a["peaks"], a["stereo"]
    rows = [
        ("file", name),
        ("integrated", f"{_v(lo['integrated_lufs'])} LUFS" if lo["integrated_defined"]
         else f"undefined (< 0.4 s); ungated {_v(lo['ungated_lufs'])} LUFS"),
        ("short-term max", f"{_v(lo['short_term_max_lufs'])} LUFS"),
        ("momentary max", f"{_v(lo['momentary_max_lufs'])} LUFS"),
        ("loudness range", f"{_v(lo['lra_lu'])} LU"),
        ("true peak", f"{_v(pk['true_peak_dbtp'], '{:.2f}')} dBTP"),
        ("sample peak", f"{_v(pk['sample_peak_dbfs'], '{:.2f}')} dBFS"),
        ("crest / PLR", f"{_v(pk['crest_db'])} / {_v(pk['plr_db'])} dB"),
        ("DC offset", ", ".join(f"{v:+.5f}" for v in a["dc_offset"])),
        ("clipped runs", str(a["clipped_runs"])),
        ("tonal balance", "  ".join(f"{k} {_v(v)}" for k, v in a["tonal_balance_db"].items())),
        ("correlation", f"{_v(st['correlation'], '{:.2f}')} (below 120 Hz "
         f"{_v(st['correlation_low'], '{:.2f}')})"),
        ("side/mid", f"{_v(st['side_to_mid_db'])} dB"),
        ("flags", ", ".join(a["flags"]) or "none"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def plot(analyses: list[tuple[str, dict[str, Any]]], out: Path, target: float = -14.0) -> Path:
    """Loudness curves and tonal balance of each analysis, side by side, into `out`."""
    from bridge.commands.report import pyplot, save_png
    from engine.mastering.analysis import TARGET_CURVE

    plt = pyplot()

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 7))
    for name, a in analyses:
        hop = a["curves"]["hop_s"]
        for key, style in (("momentary", ":"), ("short_term", "-")):
            ys = [float("nan") if v is None else v for v in a["curves"][key]]
            ax1.plot([hop * (i + 1) for i in range(len(ys))], ys, style,
                     label=f"{name} {key.replace('_', '-')}")
        bands = list(a["tonal_balance_db"])
        vals = [float("nan") if v is None else v for v in a["tonal_balance_db"].values()]
        ax2.plot(bands, vals, "o-", label=name)
    ax1.axhline(target, color="k", lw=0.8, label=f"target {target:g} LUFS")
    ax1.set(xlabel="time (s)", ylabel="LUFS", title="Loudness")
    ax1.legend(fontsize=7)
    ax2.plot(list(TARGET_CURVE), list(TARGET_CURVE.values()), "k--", label="target curve")
    ax2.set(ylabel="dB relative to total", title="Tonal balance")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, out)


def cmd_analyze(args: argparse.Namespace) -> int:
    missing = [p for p in args.files if not p.is_file()]
    for p in missing:
        report.error(ErrorCode.INPUT_MISSING, f"'{p}' does not exist or is not a file.")
    if missing:
        return exit_status(ErrorCode.INPUT_MISSING)
    from engine import audio
    from engine.config import Limits
    from engine.errors import StembridgeError
    from engine.mastering.analysis import analyze

    status, done = 0, []
    for path in args.files:
        try:
            decoded, _ = audio.load(path, Limits())
        except StembridgeError as err:
            report.error(err.code, str(err), where=str(path))
            status = status or err.exit_code
            continue
        done.append((path.name, analyze(decoded.samples, decoded.samplerate)))
    if args.json:
        print(json.dumps([{"file": n, **a} for n, a in done], indent=2))
    else:
        print("\n\n".join(table(n, a) for n, a in done))
    if args.plot is not None and done:
        try:
            plot(done, args.plot)
        except ImportError:
            report.error(ErrorCode.INVALID_ARGUMENT,
                         "--plot needs matplotlib: pip install 'stembridge[plot]'.")
            return status or 2
        except OSError as exc:
            report.error(ErrorCode.OUTPUT_FAILED, f"Cannot write '{args.plot}': {exc}.")
            return status or exit_status(ErrorCode.OUTPUT_FAILED)
    return status
