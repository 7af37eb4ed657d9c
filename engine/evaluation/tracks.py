"""Evaluation tracks: a mixture and its reference stems, from MUSDB18, MUSDB18-HQ, any
folder of ``<track>/mixture.wav`` + ``<stem>.wav``, or the built-in smoke set.

Layouts read (``root`` is the path given, or its `subset` folder when it has one):

* MUSDB18: ``root/<track>.stem.mp4``, five audio streams in the NI Stems order (mixture,
  drums, bass, other, vocals); the mixture is stream 0, as the `musdb` package takes it.
* MUSDB18-HQ and any folder of tracks: ``root/<track>/mixture.wav`` and one
  ``<stem>.wav`` per reference stem (any audio format libsndfile or ffmpeg reads).
* `BUILTIN`: the 6-second MUSDB18 excerpt that the `stempeg` package ships, with the
  mixture taken as the sum of its four stems (its stream 0 is not their sum).

Every file is read through the engine's decoder with its limits (size, length, channels,
read time); nothing is written.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from engine.config import Limits
from engine.errors import InputError, InvalidArgumentError, PackageMissingError
from protocol.errors import ErrorCode

__all__ = ["BUILTIN", "MUSDB_STEMS", "Track", "find_tracks", "iter_tracks", "load_track"]

#: The name of the built-in smoke set (the stempeg excerpt).
BUILTIN = "builtin"
#: MUSDB18's stems in the order of a .stem.mp4's streams 1-4.
MUSDB_STEMS = ("drums", "bass", "other", "vocals")
#: Frames by which a track's files may differ in length (AAC priming); cut to the shortest.
LENGTH_SLACK = 4096
_MIXTURE = "mixture"


class Track(NamedTuple):
    """One evaluation track: `mixture` and every reference float32 (frames, channels) at
    `rate` Hz, all of one shape; `references` in the data set's stem order."""

    name: str
    mixture: np.ndarray
    references: dict[str, np.ndarray]
    rate: int


def _builtin_path() -> Path:
    try:
        import stempeg
    except ImportError as exc:
        raise PackageMissingError(
            "The built-in evaluation set is the excerpt the stempeg package ships, which is "
            "not installed. It comes with stembridge's 'eval' extra: "
            "pip install 'stembridge[eval]'.") from exc
    return Path(stempeg.example_stem_path())


def find_tracks(path: str | os.PathLike[str], subset: str | None = "test",
                tracks: int | None = None) -> list[Path]:
    """The track files (.stem.mp4) and folders (with mixture.wav) under `path`, sorted by
    name, at most `tracks` of them; `BUILTIN` gives the stempeg excerpt. Raises
    INPUT_MISSING when there are none."""
    if tracks is not None and tracks < 1:
        raise InvalidArgumentError(f"The number of tracks must be at least 1, not {tracks}.")
    if str(path) == BUILTIN:
        return [_builtin_path()]
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise InputError(f"No data set at '{root}': give a MUSDB18 or MUSDB18-HQ folder, a "
                         "folder of track folders, or a .stem.mp4 file.",
                         code=ErrorCode.INPUT_MISSING)
    if subset and (root / subset).is_dir():
        root = root / subset
    found = sorted((p for p in root.iterdir() if not p.name.startswith(".") and (
        (p.is_file() and p.name.lower().endswith(".stem.mp4"))
        or (p.is_dir() and _mixture_file(p) is not None))), key=lambda p: p.name)
    if not found:
        raise InputError(
            f"No tracks in '{root}': expected MUSDB18 .stem.mp4 files, or one folder per "
            "track holding mixture.wav and a .wav file per stem (MUSDB18-HQ).",
            code=ErrorCode.INPUT_MISSING)
    return found[:tracks] if tracks else found


def _mixture_file(folder: Path) -> Path | None:
    return next((p for p in sorted(folder.iterdir())
                 if p.is_file() and p.stem.lower() == _MIXTURE), None)


def _read(path: Path, limits: Limits, stream: int | None = None) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 and the rate of one file (or stream), bounded."""
    from engine import audio

    decoded, _warnings = audio.load(path, limits, stream_index=stream)
    return np.ascontiguousarray(decoded.samples.T), decoded.samplerate


def _track_name(path: Path) -> str:
    name = path.name
    return name[: -len(".stem.mp4")] if name.lower().endswith(".stem.mp4") else name


def load_track(path: Path, limits: Limits | None = None, *, builtin: bool = False) -> Track:
    """The `Track` at `path`: a .stem.mp4 file or a track folder (module docstring).
    `builtin`: the stempeg excerpt's convention (mixture = the sum of its stems)."""
    limits = limits or Limits()
    parts: dict[str, tuple[np.ndarray, int]] = {}
    if path.is_file():
        for i, stem in enumerate(MUSDB_STEMS, start=1):
            parts[stem] = _read(path, limits, i)
        if not builtin:
            parts = {_MIXTURE: _read(path, limits, 0), **parts}
    else:
        mixture = _mixture_file(path)
        if mixture is None:
            raise InputError(f"The track folder '{path}' has no mixture.wav.",
                             code=ErrorCode.INPUT_MISSING)
        stems = sorted((p for p in path.iterdir() if p.is_file() and p != mixture
                        and not p.name.startswith(".")), key=_stem_order)
        if not stems:
            raise InputError(f"The track folder '{path}' holds no stem beside its mixture: "
                             "add one <stem>.wav per reference stem (e.g. vocals.wav).",
                             code=ErrorCode.INPUT_MISSING)
        parts[_MIXTURE] = _read(mixture, limits)
        for p in stems:
            parts[p.stem.lower()] = _read(p, limits)
    name = ("builtin: " if builtin else "") + _track_name(path)
    arrays, rate = _aligned(name, parts)
    if _MIXTURE in arrays:
        mix = arrays.pop(_MIXTURE)
    else:
        mix = np.asarray(np.sum(list(arrays.values()), axis=0, dtype=np.float32))
    return Track(name, mix, arrays, rate)


def _stem_order(p: Path) -> tuple[int, str]:
    """MUSDB18's stems first, in its order; the others by name."""
    name = p.stem.lower()
    return (MUSDB_STEMS.index(name) if name in MUSDB_STEMS else len(MUSDB_STEMS), name)


def _aligned(name: str, parts: dict[str, tuple[np.ndarray, int]]
             ) -> tuple[dict[str, np.ndarray], int]:
    """The arrays of one track at one rate, channel count and length (cut to the
    shortest when they differ by at most `LENGTH_SLACK` frames)."""
    rates = {stem: r for stem, (_, r) in parts.items()}
    channels = {stem: a.shape[1] for stem, (a, _) in parts.items()}
    lengths = {stem: a.shape[0] for stem, (a, _) in parts.items()}
    for what, facts in (("sample rates", rates), ("channel counts", channels)):
        if len(set(facts.values())) > 1:
            raise InputError(
                f"The files of track '{name}' differ in their {what} "
                f"({', '.join(f'{k} {v}' for k, v in facts.items())}); convert them to one.",
                code=ErrorCode.INPUT_UNREADABLE)
    if max(lengths.values()) - min(lengths.values()) > LENGTH_SLACK:
        raise InputError(
            f"The files of track '{name}' differ in length "
            f"({', '.join(f'{k} {v} frames' for k, v in lengths.items())}); every stem "
            "must be as long as the mixture.", code=ErrorCode.INPUT_UNREADABLE)
    n = min(lengths.values())
    return {stem: a[:n] for stem, (a, _) in parts.items()}, next(iter(rates.values()))


def iter_tracks(path: str | os.PathLike[str], subset: str | None = "test",
                tracks: int | None = None, limits: Limits | None = None) -> Iterator[Track]:
    """Each `Track` of the data set at `path` (`find_tracks`), decoded one at a time."""
    builtin = str(path) == BUILTIN
    for p in find_tracks(path, subset, tracks):
        yield load_track(p, limits, builtin=builtin)


def samples_digest(arrays: Iterable[tuple[str, np.ndarray]], rate: int) -> str:
    """The sha256 of decoded audio: each (name, float32 array) with its shape, and the
    rate (Hz): what the estimate caches of `eval` and of mixer training are keyed by."""
    digest = hashlib.sha256(f"rate={rate}".encode())
    for name, arr in arrays:
        a = np.ascontiguousarray(arr, dtype=np.float32)
        digest.update(f"|{name}:{a.shape}|".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()
