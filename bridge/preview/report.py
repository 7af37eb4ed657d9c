"""What the preview played: counters of stems and mixture frames, the fallbacks, a
timeline of runs, the event log, and news lines for the terminal.

Written by the audio thread only (one block at a time), read by anyone: every field is
replaced or appended whole, so a reader sees a consistent enough picture without a lock.
Plain Python (no pyo, no numpy).

Units: ``out`` counts output frames since the player was built, ``pos``/``src`` are
frames of the song, both at the song's rate; seconds are floats.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any


def clock(seconds: float) -> str:
    """``m:ss.mmm``, e.g. ``1:05.250``."""
    return f"{int(seconds // 60)}:{seconds % 60:06.3f}"


class PlayReport:
    """Statistics, timeline and events of one player.

    Args:
        samplerate: Hz of the song.
        block: frames per audio block.
        ramp: seconds of every gain ramp and crossfade (reported only).
        stems: the job's stem names.
    """

    def __init__(self, samplerate: int, block: int, ramp: float, stems: list[str]) -> None:
        self.samplerate = samplerate
        self.block = block
        self.ramp = ramp
        self.stems = list(stems)
        self.fallback_count = 0
        self.fallback_frames = 0
        self.stems_frames = 0
        self.played_frames = 0
        self.first_stems_out: int | None = None
        self.first_stems_wall: float | None = None  # time.perf_counter() then
        self.lead_frames = 0
        self.mode = "silent"
        self.separation = "waiting"
        self.fault: str | None = None
        self.events: list[dict[str, Any]] = []
        self.news: deque[str] = deque(maxlen=200)
        self.timeline: list[dict[str, Any]] = []
        self._last_source: float | None = None

    def event(self, what: str, out: int, pos: int) -> None:
        """Log `what` at output frame `out`, song frame `pos` (also as a news line)."""
        self.events.append({"out": out, "pos": pos, "what": what})
        self.news.append(f"{clock(pos / self.samplerate)}  {what}")

    def restart(self) -> None:
        """Playback (re)starts: the next block's source is news again."""
        self._last_source = None

    def count(self, target: float, out: int, pos: int) -> None:
        """Count one played block whose crossfade target is `target` (1: the stems, 0: the
        mixture); a change of source is an event, a change to the mixture a fallback."""
        n = self.block
        self.played_frames += n
        if target == 0.0:
            self.fallback_frames += n
            if self._last_source != 0.0:
                self.fallback_count += 1
                self.event("mixture (the stems are not final here yet)", out, pos)
        else:
            self.stems_frames += n
            if self._last_source != 1.0:
                self.event("stems", out, pos)
            if self.first_stems_out is None:
                self.first_stems_out = out
                self.first_stems_wall = time.perf_counter()
        self._last_source = target

    def mark(self, mode: str, out: int, src: int | None) -> None:
        """Extend the timeline by one block of `mode` (``stems``, ``mixture``, ``fade``,
        ``silent``) at output frame `out` from song frame `src` (None: silent): runs of
        blocks with one mode and contiguous positions."""
        n, last = self.block, self.timeline[-1] if self.timeline else None
        self.mode = mode
        if last is not None and last["mode"] == mode and last["out_end"] == out and (
                src is None or last["src_start"] + (last["out_end"] - last["out_start"])
                == src):
            last["out_end"] += n
            return
        self.timeline.append({"mode": mode, "out_start": out, "out_end": out + n,
                              "src_start": src})

    def fail(self, exc: BaseException) -> None:
        """Keep the first internal error of the audio callback."""
        if self.fault is None:
            self.fault = f"{type(exc).__name__}: {exc}"
            self.news.append(f"internal error in the audio callback: {self.fault}")

    def status(self) -> dict[str, Any]:
        """The report's part of the ``status`` payload (PROTOCOL.md)."""
        sr = self.samplerate
        return {"mode": self.mode, "separation": self.separation,
                "final_ahead": self.lead_frames / sr, "fallback_count": self.fallback_count,
                "fallback_seconds": self.fallback_frames / sr}

    def as_dict(self, output_frames: int) -> dict[str, Any]:
        """Statistics of what was played, seconds at the song's rate (the render's JSON
        report): `output_frames` frames were computed in all."""
        sr = self.samplerate
        return {
            "samplerate": sr, "block": self.block, "ramp_s": self.ramp,
            "stems": list(self.stems), "output_s": output_frames / sr,
            "played_s": self.played_frames / sr, "stems_s": self.stems_frames / sr,
            "fallback": {"count": self.fallback_count,
                         "seconds": self.fallback_frames / sr},
            "first_stems_s": None if self.first_stems_out is None
            else self.first_stems_out / sr,
            "separation": self.separation, "fault": self.fault,
            "timeline": list(self.timeline), "events": list(self.events),
        }


def summary(report: PlayReport, output_frames: int, t_submit: float) -> dict[str, Any]:
    """`PlayReport.as_dict` plus ``submit_to_stems_s``: seconds from the request (a
    `time.perf_counter` value) until the stems were first heard (None: never)."""
    rep = report.as_dict(output_frames)
    rep["submit_to_stems_s"] = (None if report.first_stems_wall is None
                                else report.first_stems_wall - t_submit)
    return rep


def summary_line(rep: dict[str, Any]) -> str:
    """One line for the terminal from a `summary`."""
    first = rep["submit_to_stems_s"]
    return (f"played {rep['played_s']:.1f} s: stems {rep['stems_s']:.1f} s, mixture fallback "
            f"{rep['fallback']['count']} time(s), {rep['fallback']['seconds']:.1f} s; stems "
            + ("never final at the playhead" if first is None
               else f"audible {first:.2f} s after the request"))
