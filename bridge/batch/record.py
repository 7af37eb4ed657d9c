"""The batch record: ``<out>/stembridge-batch.jsonl``, one JSON object per line, appended
and fsynced, so a batch that is interrupted or killed at any moment can be resumed.

Each line is an `Entry`: an input's state change (``running``, ``done`` with its cache key
and output files, ``failed`` with its error code and message), keyed by its output folder
(`BatchItem.rel`). The last line of an input wins. An input's *fingerprint* (size and
modification time in ns) and the batch's *config id* (the options that change the output)
are stored with it: a ``done`` input is skipped on resume only while both still match and
its ``stems.json`` exists; a changed input is done again. With ``--master``, an entry
also holds its master (`Entry.master`): an input whose stems are done but whose master
is missing, failed or made with other settings is only mastered again. A killed writer
can leave a partial last line; reading skips it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RECORD_NAME = "stembridge-batch.jsonl"
RECORD_VERSION = 1
#: Bound on reading a record back (it is our own file, but may be huge for a catalogue).
MAX_RECORD_BYTES = 4 * 2**30

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"


@dataclass
class Entry:
    """One state change of one input.

    Attributes:
        item: the input's output folder relative to the batch folder (its key).
        input: the input file's absolute path.
        state: ``running``, ``done`` or ``failed``.
        fingerprint: [size in bytes, modification time in ns] of the input when it started.
        config: id of the options that shape the output (`config_id`).
        attempt: 1 for the first try, counted across runs until the input changes.
        cache_key: the results-cache key of the separation (``done``).
        outputs: output file names in the item's folder (``done``).
        duration: seconds of audio (``done``).
        error: {"code", "message"} (``failed``).
        worker: who ran it (``local`` or a Ray actor id).
        time: Unix time of the change.
        master: with ``--master``: ``{"config", "preset", "outputs", "before", "after"}``
            (`bridge.batch.task.master_mix`), None when not mastered.
    """

    item: str
    input: str
    state: str
    fingerprint: list[int] = field(default_factory=list)
    config: str = ""
    attempt: int = 1
    cache_key: str = ""
    outputs: list[str] = field(default_factory=list)
    duration: float = 0.0
    error: dict[str, str] | None = None
    worker: str = ""
    time: float = 0.0
    master: dict[str, Any] | None = None

    def to_json(self) -> str:
        data = {"v": RECORD_VERSION, **asdict(self)}
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_payload(cls, data: Any) -> Entry | None:
        """The entry of a decoded line; None for a line this version does not know."""
        if not isinstance(data, dict) or data.get("v") != RECORD_VERSION:
            return None
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            entry = cls(**known)
        except TypeError:
            return None
        return entry if isinstance(entry.item, str) and isinstance(entry.state, str) else None


def fingerprint(path: Path | str) -> list[int]:
    """[size in bytes, modification time in ns] of `path`, or a remote input's
    fingerprint for a URL (`bridge.batch.storage.fingerprint`); raises `OSError`."""
    if isinstance(path, str) and "://" in path:
        from bridge.batch import storage

        return storage.fingerprint(path)
    st = os.stat(path)
    return [int(st.st_size), int(st.st_mtime_ns)]


def config_id(options: dict[str, Any]) -> str:
    """A stable id of the options that change an output (model, stems, format, ...)."""
    return json.dumps(options, sort_keys=True, separators=(",", ":"), default=str)


class BatchRecord:
    """The record file of one output folder: `load` it, then `append` entries."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / RECORD_NAME
        self.latest: dict[str, Entry] = {}
        self._fh: Any = None

    def exists(self) -> bool:
        return self.path.is_file()

    def load(self) -> dict[str, Entry]:
        """Read every complete line; `latest` maps each item to its last entry."""
        self.latest = {}
        for entry in self._entries():
            self.latest[entry.item] = entry
        return self.latest

    def _entries(self) -> Iterator[Entry]:
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            return
        with fh:
            read = 0
            for raw in fh:
                read += len(raw)
                if read > MAX_RECORD_BYTES:
                    break
                if not raw.endswith(b"\n"):
                    break  # a partial last line: its writer was killed mid-append
                try:
                    entry = Entry.from_payload(json.loads(raw))
                except ValueError:
                    continue
                if entry is not None:
                    yield entry

    def append(self, entry: Entry) -> None:
        """Append `entry` as one line and fsync it (durable before the call returns)."""
        if not entry.time:
            entry.time = round(time.time(), 3)
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "ab")  # noqa: SIM115 (closed in close())
            self._fh.seek(0, os.SEEK_END)
            if self._fh.tell() and not self._ends_with_newline():
                self._fh.write(b"\n")  # end a partial line a killed writer left
        self._fh.write(entry.to_json().encode("utf-8") + b"\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.latest[entry.item] = entry

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

    def close(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None


def decide(prev: Entry | None, path: Path | str, config: str, folder: Any,
           max_attempts: int, master: str | None = None) -> tuple[str, int]:
    """What a (resumed) batch does with an input whose last entry is `prev`: ``"done"``
    (skip: done with this fingerprint and config, its ``stems.json`` still there, and
    mastered with config `master` when that is given), ``"master"`` (its stems are done:
    master it only), ``"failed"`` (skip: failed `max_attempts` times as it is) or
    ``"run"``; and the number of the attempt it would be. `path` is the input's path or
    URL; `folder` its output folder (a `Path`, or a `bridge.batch.storage.RemoteFolder`)."""
    try:
        fp = fingerprint(path)
    except OSError:
        return "run", 1
    if prev is None or prev.fingerprint != fp or prev.config != config:
        return "run", 1
    stems_done = bool(prev.cache_key) and (folder / "stems.json").is_file()
    if prev.state == DONE:
        if not (folder / "stems.json").is_file():
            return "run", 1
        if master is not None and not _mastered(prev, folder, master):
            return "master", 1
        return "done", prev.attempt
    if prev.state == FAILED:
        if prev.attempt >= max_attempts:
            return "failed", prev.attempt
        return ("master" if stems_done and master is not None else "run"), prev.attempt + 1
    return "run", prev.attempt + 1  # running when the batch was interrupted or killed


def _mastered(prev: Entry, folder: Any, master: str) -> bool:
    """Whether `prev` holds a master made with config `master` whose files are there."""
    m = prev.master
    if not isinstance(m, dict) or m.get("config") != master:
        return False
    outputs = m.get("outputs")
    return isinstance(outputs, list) and all(
        isinstance(f, str) and (folder / f).is_file() for f in outputs)
