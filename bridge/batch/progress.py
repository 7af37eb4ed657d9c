"""The batch's progress line and its final summary.

Progress: one line on stderr, ``files done/total, audio hours done, throughput, ETA``,
redrawn in place on a terminal and printed every ~5 % (at most every 10 s) otherwise.
Throughput is audio-hours separated per wall-clock hour of this run; the ETA assumes the
remaining files take as long on average as this run's finished ones.

Summary: a dict (``--json``; also written to ``<out>/stembridge-batch-summary.json``)
and a readable table: files (total, done now, done before, failed), audio duration, wall
time, throughput, and every failure with its code; with ``--master``, the loudness of the
inputs and of their masters (median, lowest and highest integrated LUFS of this run's
masters, highest true peak).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any

SUMMARY_NAME = "stembridge-batch-summary.json"


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@dataclass
class Tally:
    """Counts of one batch run. Durations in seconds of audio, times in wall seconds."""

    total: int
    before: int = 0  # done in an earlier run, skipped
    done: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)
    failures: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    master: str | None = None  # the mastering preset, if any
    #: (input LUFS, master LUFS, master true peak in dBTP) of each master of this run
    loudness: list[tuple[float | None, float | None, float | None]] = field(
        default_factory=list)

    def add_master(self, section: dict[str, Any]) -> None:
        """Count one master (its record section, `bridge.batch.task.master_mix`)."""
        before, after = section.get("before") or {}, section.get("after") or {}
        self.loudness.append((before.get("lufs"), after.get("lufs"), after.get("true_peak")))

    @property
    def finished(self) -> int:
        return self.before + self.done + self.failed

    @property
    def wall(self) -> float:
        return time.monotonic() - self.started

    def throughput(self) -> float:
        """Audio-hours separated per wall-clock hour in this run (0 before the first)."""
        return self.audio_seconds / self.wall if self.wall > 0 else 0.0

    def eta(self) -> float | None:
        ran = self.done + self.failed
        if not ran:
            return None
        return (self.total - self.finished) * self.wall / ran


class ProgressLine:
    """Draws a `Tally` on `stream`; `enabled` False draws nothing."""

    def __init__(self, tally: Tally, enabled: bool, stream: IO[str] | None = None) -> None:
        self.tally = tally
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last_step = -1
        self._last_time = 0.0

    def text(self) -> str:
        t = self.tally
        eta = t.eta()
        width = 20
        frac = t.finished / t.total if t.total else 1.0
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        return (f"batch [{bar}] {t.finished}/{t.total} files, "
                f"{t.audio_seconds / 3600:.2f} h audio, {t.throughput():.1f} audio-h/h, "
                f"failed {t.failed}, ETA {'--' if eta is None else _clock(eta)}")

    def update(self) -> None:
        if not self.enabled:
            return
        t = self.tally
        if self.tty:
            self.stream.write("\r" + self.text())
            self.stream.flush()
            return
        step = int(20 * t.finished / t.total) if t.total else 20
        now = time.monotonic()
        if step > self._last_step or now - self._last_time > 10:
            self._last_step, self._last_time = step, now
            self.stream.write(self.text() + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")


def summary(tally: Tally, out: str, executor: str) -> dict[str, Any]:
    """The batch summary as plain data (JSON-ready)."""
    wall = tally.wall
    return {
        "out": out,
        "executor": executor,
        "interrupted": tally.interrupted,
        "files": {"total": tally.total, "done": tally.done, "done_before": tally.before,
                  "failed": tally.failed,
                  "not_run": tally.total - tally.finished},
        "audio_seconds": round(tally.audio_seconds, 3),
        "wall_seconds": round(wall, 3),
        "audio_hours_per_hour": round(tally.throughput(), 3),
        "failures": tally.failures,
        **({"master": _master_summary(tally)} if tally.master is not None else {}),
    }


def _spread(values: list[float | None]) -> dict[str, float] | None:
    """Median, lowest and highest of the defined `values` (None when there are none)."""
    found = sorted(v for v in values if v is not None)
    if not found:
        return None
    n = len(found)
    median = found[n // 2] if n % 2 else (found[n // 2 - 1] + found[n // 2]) / 2
    return {"median": round(median, 2), "min": round(found[0], 2), "max": round(found[-1], 2)}


def _master_summary(tally: Tally) -> dict[str, Any]:
    """This run's masters: their number and the loudness (LUFS) before and after."""
    peaks = [p for _, _, p in tally.loudness if p is not None]
    return {"preset": tally.master, "files": len(tally.loudness),
            "lufs_before": _spread([b for b, _, _ in tally.loudness]),
            "lufs_after": _spread([a for _, a, _ in tally.loudness]),
            "true_peak_after_max": round(max(peaks), 2) if peaks else None}


def _master_row(m: dict[str, Any]) -> str:
    """``3 files (streaming): -21.3 -> -14.0 LUFS median (...), true peak <= -1.0 dBTP``."""
    if not m["files"]:
        return f"no file mastered in this run ({m['preset']})"
    b, a = m["lufs_before"], m["lufs_after"]

    def span(s: dict[str, float] | None) -> str:
        return "--" if s is None else f"{s['median']:.1f}"

    def rng(s: dict[str, float] | None) -> str:
        return "--" if s is None else f"{s['min']:.1f}..{s['max']:.1f}"

    peak = m["true_peak_after_max"]
    return (f"{m['files']} files ({m['preset']}): {span(b)} -> {span(a)} LUFS median "
            f"(inputs {rng(b)}, masters {rng(a)}), true peak "
            f"<= {'--' if peak is None else f'{peak:.1f}'} dBTP")


def table(data: dict[str, Any]) -> str:
    """`summary`'s data as a readable table, failures listed with their codes."""
    f = data["files"]
    rows = [
        ("files", f"{f['total']} ({f['done']} done now, {f['done_before']} done before, "
                  f"{f['failed']} failed, {f['not_run']} not run)"),
        ("audio", _clock(data["audio_seconds"]) + " (this run)"),
        ("wall time", _clock(data["wall_seconds"])),
        ("throughput", f"{data['audio_hours_per_hour']:.2f} audio-hours per hour"),
        ("executor", data["executor"]),
        ("output", data["out"]),
    ]
    if "master" in data:
        rows.insert(4, ("master", _master_row(data["master"])))
    lines = [f"{k:12s} {v}" for k, v in rows]
    if data["interrupted"]:
        lines.append("interrupted: what finished is kept; run the same command to resume.")
    if data["failures"]:
        lines.append(f"failures ({len(data['failures'])}):")
        width = max(len(x["code"]) for x in data["failures"])
        for x in data["failures"]:
            lines.append(f"  {x['code']:{width}s}  {x['input']}: {x['message']}")
    return "\n".join(lines)
