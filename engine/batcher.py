"""Windows of several jobs in one forward pass: the forward passes of one device, shared.

    batcher = WindowBatcher(max_windows=4)
    out = batcher.forward(model, inp, length, precision="fp32", priority=0, job="a")

Each job's thread (`engine.chunking.iter_separate` with ``forward=``) submits its windows,
`inp` float32 (n, channels, samples) on the CPU with ``samples =
model.valid_length(length)`` and `length` the real samples of each window, and blocks
until its output comes back: float32 (n, sources, channels, samples') on the CPU, as
`model.forward` gives it. One batcher thread runs every pass:

- **Order**: the most urgent priority first (a lower number is more urgent, as
  `bridge.jobs.priority_of`: 0 interactive, 1 batch); within a priority, round-robin
  between jobs (a job that was served goes to the back of the turn), each job's
  requests in the order it sent them. So an interactive job's next windows go in the
  very next pass, and no job of a priority starves.
- **Merging**: the first request in that order picks the pass's kind (the same model
  object, input shape[1:], `length` and precision); every compatible request, in the
  same order over all priorities, joins while the pass holds at most `max_windows`
  windows (a request is never split; one larger than that runs alone).
- **Waiting for company**: when the pass is not full and another active job (one that
  submitted before and has not finished) has nothing queued, the thread waits for it,
  but never more than `max_wait` seconds (default 2 ms) after the oldest request of the
  pass arrived; with nothing else active it runs at once.
- **Errors**: an exception in a pass goes to every request of that pass; a job that is
  cancelled while it waits stops waiting (`CancelledError`) and its queued windows are
  dropped, the others' results are unaffected; `close` fails every pending request
  with `BatcherClosedError`.

The pass runs under ``torch.inference_mode()`` and the precision's autocast
(`engine.device.autocast_factory`), entered on the batcher thread (autocast state is
per thread). `stats` counts passes, windows per pass and windows per job.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.errors import BatcherClosedError, CancelledError

if TYPE_CHECKING:
    import torch

#: How often a waiting job's thread looks at its cancel token, seconds.
POLL_S = 0.05
#: A job that submitted nothing for this long no longer counts as company, seconds
#: (a safety net: a job's end normally says so through `finish_job`).
ACTIVE_S = 60.0
#: Passes remembered in `BatcherStats.sizes` / `.jobs` (a long-lived server).
HISTORY = 10_000
#: Jobs remembered in `BatcherStats.per_job`.
JOBS_KEPT = 1_000


def rank(priority: str) -> int:
    """The priority number of a request's `priority` ("interactive" 0, else 1)."""
    return 0 if priority == "interactive" else 1


@dataclass
class BatcherStats:
    """What the batcher did (tests, benchmarks).

    Attributes:
        passes: forward passes run (failed ones included).
        windows: windows in them.
        sizes: windows of each pass, oldest first (the last `HISTORY`).
        jobs: the job of each window of each pass, in pass order (the last `HISTORY`).
        per_job: job -> windows computed for it.
        forward_seconds: time inside the passes (copies to and from the device included).
    """

    passes: int = 0
    windows: int = 0
    sizes: deque[int] = field(default_factory=lambda: deque(maxlen=HISTORY))
    jobs: deque[tuple[str, ...]] = field(default_factory=lambda: deque(maxlen=HISTORY))
    per_job: dict[str, int] = field(default_factory=dict)
    forward_seconds: float = 0.0

    @property
    def windows_per_pass(self) -> float:
        return self.windows / self.passes if self.passes else 0.0


@dataclass(eq=False)
class _Request:
    model: Any
    inp: torch.Tensor
    length: int
    precision: str
    priority: int
    job: str
    future: Future[Any]
    arrived: float

    @property
    def n(self) -> int:
        return int(self.inp.shape[0])

    @property
    def kind(self) -> tuple[int, tuple[int, ...], int, str]:
        return id(self.model), tuple(self.inp.shape[1:]), self.length, self.precision


class WindowBatcher:
    """One thread running the forward passes of one device for every job (module doc).

    Args:
        max_windows: windows per pass at most, or a function of the model giving it
            (e.g. from the device's free memory).
        max_wait: seconds a request waits for company at most (see the module doc).
    """

    def __init__(self, max_windows: int | Callable[[Any], int] = 4, *,
                 max_wait: float = 0.002, name: str = "stembridge-batcher") -> None:
        self.max_windows = max_windows
        self.max_wait = max_wait
        self.name = name
        self.stats = BatcherStats()
        self._cond = threading.Condition()
        self._lanes: dict[int, dict[str, deque[_Request]]] = {}
        self._active: dict[str, float] = {}  # job -> when it last submitted
        self._paused = False
        self._closed = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ jobs' side

    def submit(self, model: Any, inp: torch.Tensor, length: int, *, precision: str,
               priority: int = 1, job: str = "") -> Future[Any]:
        """Queue `inp` (n, channels, samples) for `model`; the future's result is the
        output (n, sources, channels, samples'), float32 on the CPU."""
        fut: Future[Any] = Future()
        now = time.monotonic()
        req = _Request(model, inp, int(length), precision, int(priority), job, fut, now)
        with self._cond:
            if self._closed:
                raise BatcherClosedError()
            lane = self._lanes.setdefault(req.priority, {})
            lane.setdefault(job, deque()).append(req)
            self._active[job] = now
            self._start()
            self._cond.notify_all()
        return fut

    def forward(self, model: Any, inp: torch.Tensor, length: int, *, precision: str,
                priority: int = 1, job: str = "", cancel: Any = None) -> torch.Tensor:
        """`submit` and wait for the output; raises `CancelledError` soon (within
        `POLL_S`) after `cancel` (a `CancelToken`) is set, the pass's exception if it
        failed, `BatcherClosedError` if the batcher closed first."""
        fut = self.submit(model, inp, length, precision=precision, priority=priority,
                          job=job)
        while True:
            try:
                return fut.result(timeout=POLL_S)
            except FutureTimeout:
                if cancel is not None and cancel.cancelled:
                    fut.cancel()  # dropped if still queued; a running pass just finishes
                    raise CancelledError() from None

    def finish_job(self, job: str) -> None:
        """`job` sends no more windows: passes stop waiting for it."""
        with self._cond:
            self._active.pop(job, None)
            self._cond.notify_all()

    # ------------------------------------------------------------------ control

    def pause(self) -> None:
        """Start no new pass until `resume` (the running one finishes)."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued(self) -> int:
        """Windows waiting for a pass."""
        with self._cond:
            return sum(r.n for lane in self._lanes.values() for q in lane.values()
                       for r in q if not r.future.cancelled())

    def close(self, timeout: float = 10.0) -> None:
        """Fail every queued request with `BatcherClosedError` and stop the thread
        after its running pass (waiting up to `timeout` seconds). Idempotent."""
        with self._cond:
            self._closed = True
            pending = [r for lane in self._lanes.values() for q in lane.values() for r in q]
            self._lanes.clear()
            self._cond.notify_all()
        for req in pending:
            if req.future.set_running_or_notify_cancel():
                req.future.set_exception(BatcherClosedError())
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # ------------------------------------------------------------------ the thread

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                reqs = self._next_pass()
            if reqs is None:
                return
            if reqs:
                self._run(reqs)

    def _limit(self, model: Any) -> int:
        limit = self.max_windows(model) if callable(self.max_windows) else self.max_windows
        return max(1, int(limit))

    def _plan(self) -> list[_Request]:
        """The next pass's requests (still queued), in the order of the module doc."""
        head = next((q[0] for p in sorted(self._lanes) for q in self._lanes[p].values()
                     if q), None)
        if head is None:
            return []
        limit, kind = self._limit(head.model), head.kind
        chosen: list[_Request] = []
        total = 0
        for priority in sorted(self._lanes):
            lane = self._lanes[priority]
            taken = dict.fromkeys(lane, 0)
            progress = True
            while progress and total < limit:  # one request per job per round
                progress = False
                for job, queue in lane.items():
                    pos = taken[job]
                    if pos < 0 or pos >= len(queue):
                        continue
                    req = queue[pos]
                    fits = total + req.n <= limit or not chosen
                    if req.kind != kind or not fits:
                        taken[job] = -1  # a job's own requests keep their order
                        continue
                    chosen.append(req)
                    total += req.n
                    taken[job] = pos + 1
                    progress = True
                    if total >= limit:
                        break
        return chosen

    def _company(self) -> bool:
        """Whether an active job has nothing queued (it may soon join the pass)."""
        now = time.monotonic()
        queued = {job for lane in self._lanes.values() for job, q in lane.items() if q}
        return any(job not in queued and now - seen < ACTIVE_S
                   for job, seen in self._active.items())

    def _next_pass(self) -> list[_Request] | None:
        """Wait for, then take, the next pass's requests; None once closed. Under the
        lock."""
        while True:
            if self._closed:
                return None
            self._purge()
            chosen = [] if self._paused else self._plan()
            if not chosen:
                self._cond.wait(1.0)
                continue
            room = sum(r.n for r in chosen) < self._limit(chosen[0].model)
            wait = min(r.arrived for r in chosen) + self.max_wait - time.monotonic()
            if room and wait > 0 and self._company():
                self._cond.wait(wait)
                continue
            self._take(chosen)
            return [r for r in chosen if r.future.set_running_or_notify_cancel()]

    def _purge(self) -> None:
        """Drop the requests whose jobs stopped waiting for them (cancelled)."""
        for priority in list(self._lanes):
            lane = self._lanes[priority]
            for job in list(lane):
                queue = lane[job]
                if any(r.future.cancelled() for r in queue):
                    queue = deque(r for r in queue if not r.future.cancelled())
                    if queue:
                        lane[job] = queue
                    else:
                        del lane[job]
            if not lane:
                del self._lanes[priority]

    def _take(self, chosen: list[_Request]) -> None:
        """Remove `chosen` from the lanes; their jobs go to the back of their turn."""
        ids = {id(r) for r in chosen}
        for req in chosen:
            lane = self._lanes[req.priority]
            queue = lane.pop(req.job, None)
            if queue is None:
                continue
            rest = deque(r for r in queue if id(r) not in ids)
            if rest:
                lane[req.job] = rest
            if not lane:
                del self._lanes[req.priority]

    def _run(self, reqs: list[_Request]) -> None:
        """One forward pass over `reqs`; results (or the exception) to their futures."""
        t0 = time.perf_counter()
        try:
            outs = self._forward(reqs)
        except BaseException as exc:  # every future of the pass hears of it
            for req in reqs:
                req.future.set_exception(exc)
            outs = None
        self._count(reqs, time.perf_counter() - t0)
        if outs is not None:
            for req, out in zip(reqs, outs, strict=True):
                req.future.set_result(out)

    def _forward(self, reqs: list[_Request]) -> list[torch.Tensor]:
        import torch

        from engine.device import autocast_factory

        first = reqs[0]
        model = first.model
        inp = first.inp if len(reqs) == 1 else torch.cat([r.inp for r in reqs])
        autocast = autocast_factory(model.device, first.precision)
        with torch.inference_mode(), autocast():
            out = model.forward(inp.to(model.device, non_blocking=True),
                                length=first.length)
        out = out.float().cpu()
        return list(out.split([r.n for r in reqs]))

    def _count(self, reqs: list[_Request], seconds: float) -> None:
        stats = self.stats
        with self._cond:
            n = sum(r.n for r in reqs)
            stats.passes += 1
            stats.windows += n
            stats.sizes.append(n)
            stats.jobs.append(tuple(r.job for r in reqs for _ in range(r.n)))
            stats.forward_seconds += seconds
            for req in reqs:
                stats.per_job[req.job] = stats.per_job.pop(req.job, 0) + req.n
            while len(stats.per_job) > JOBS_KEPT:
                del stats.per_job[next(iter(stats.per_job))]


def pass_limit(config: Any, device: torch.device) -> int | Callable[[Any], int]:
    """Windows per merged pass for an `EngineConfig` on `device`: its
    `batcher_windows`, else per model as many as fit the GPU's free memory (CUDA), else 4."""
    if config.batcher_windows:
        return int(config.batcher_windows)
    if device.type != "cuda":
        return 4

    def limit(model: Any) -> int:
        from engine.device import auto_batch_size

        return auto_batch_size(device, model.spec.window_bytes)

    return limit
