"""The local executor: one warm engine in this process, on this machine's cores or GPU.

While the engine separates one input, a second thread decodes the next (`task.prepare`:
decoding releases the GIL in libsndfile and ffmpeg), so the model rarely waits for audio.
The hand-over queue holds one decoded input: at most three inputs are in memory at once
(the one being separated, one ready, one being decoded), however long the catalogue.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.batch import task
from bridge.batch.sources import BatchItem
from protocol.errors import ErrorCode

#: on_start(item, worker) when an input's separation starts; on_outcome(item, outcome,
#: worker) when it is done or failed.
StartHook = Callable[[BatchItem, str], None]
OutcomeHook = Callable[[BatchItem, task.Outcome, str], None]
_END = object()


class LocalExecutor:
    """Runs a batch's inputs one after the other on one `engine.separator.Engine`."""

    name = "local"

    def __init__(self, batch: task.BatchOptions, out: Path, engine: Any = None) -> None:
        self.batch = batch
        self.out = out
        self._engine = engine

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from engine.separator import Engine

            self._engine = Engine(self.batch.engine_config())
        return self._engine

    def run(self, items: list[BatchItem], on_start: StartHook, on_outcome: OutcomeHook) -> None:
        """Process `items` in order; returns when all are done, raises `KeyboardInterrupt`
        (after the running input's partial files are removed) when interrupted."""
        engine = self.engine
        ready: queue.Queue[Any] = queue.Queue(maxsize=1)
        stop = threading.Event()
        decoder = threading.Thread(target=self._decode_all, args=(engine, items, ready, stop),
                                   name="stembridge-batch-decode", daemon=True)
        decoder.start()
        try:
            while True:
                prep = ready.get()
                if prep is _END:
                    break
                on_start(prep.item, "local")
                on_outcome(prep.item, task.finish(engine, prep, self.out, self.batch), "local")
        finally:
            stop.set()
            with contextlib.suppress(queue.Empty):
                left = ready.get_nowait()  # unblock a decoder waiting to hand over
                if isinstance(left, task.Prepared):
                    left.discard()  # a remote input's staged copy
            decoder.join(timeout=1.0)

    def _decode_all(self, engine: Any, items: list[BatchItem], ready: queue.Queue[Any],
                    stop: threading.Event) -> None:
        for item in items:
            if stop.is_set():
                return
            try:
                prep = task.prepare(engine, item, self.batch)
            except Exception as exc:  # a bug must fail its input, not hang the batch
                prep = task.Prepared(item, [], failure=task.failed(
                    ErrorCode.INTERNAL, f"decoding failed unexpectedly: {exc!r}"),
                    started=time.perf_counter())
            if not _put(ready, prep, stop):
                prep.discard()
                return
        _put(ready, _END, stop)


def _put(ready: queue.Queue[Any], value: Any, stop: threading.Event) -> bool:
    """Hand `value` over, waiting while the queue is full; False once `stop` is set."""
    while not stop.is_set():
        try:
            ready.put(value, timeout=0.2)
            return True
        except queue.Full:
            continue
    return False
