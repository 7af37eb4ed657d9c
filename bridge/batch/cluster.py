"""The Ray executor: actors that each hold a warm engine, one task per input, driven and
counted on the driver (this process).

* **Actors**: `Worker` wrapped with ``ray.remote`` when the batch starts (Ray is imported
  only then). On a cluster with GPUs each actor reserves ``num_gpus=1`` (one actor per
  GPU by default); otherwise ``--cpus-per-worker`` CPUs (one actor per that many CPUs) and
  as many torch threads. An actor loads its model on its first input and keeps it warm.
* **Back-pressure**: at most `IN_FLIGHT_PER_WORKER` inputs are queued per actor; the
  driver submits the next input when one finishes, so memory stays bounded however long
  the catalogue (an input is a path and a few options until an actor decodes it).
* **Retries**: when an actor or its node dies (killed, out of memory, node lost), each
  input it held is given to a live actor again (a new actor replaces the dead one), up to
  `MAX_WORKER_DEATHS` times per input. A retried input cannot leave duplicate or corrupt
  outputs: its folder is the same, every file in it is replaced atomically, and the
  retry first removes the temporary files the dead attempt left (`bridge.batch.task`).
  An exception inside the task itself (a bug) fails that input and is not retried.
* **Storage**: inputs and the output folder must be on a file system every node sees
  (the same paths on every node, e.g. NFS); object storage is not supported yet.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.batch import task
from bridge.batch.sources import BatchItem
from protocol.errors import ErrorCode

IN_FLIGHT_PER_WORKER = 2
MAX_WORKER_DEATHS = 3
INSTALL_RAY = "pip install 'stembridge[ray]'"


def import_ray() -> Any:
    """The `ray` module; raises `InvalidArgumentError` saying how to install it."""
    try:
        import ray
    except ImportError:
        from engine.errors import InvalidArgumentError

        raise InvalidArgumentError("The Ray executor needs Ray, which is not installed: "
                                   f"{INSTALL_RAY} (or run the batch without --ray).") from None
    return ray


class Worker:
    """What each Ray actor runs: one warm engine, one input per call."""

    def __init__(self, batch: task.BatchOptions, out: str) -> None:
        from engine.separator import Engine

        self.batch = batch
        self.out = Path(out)
        self.engine = Engine(batch.engine_config())

    def ident(self) -> tuple[str, int]:
        """(host:pid, pid) of the actor's process."""
        return task.worker_name(), os.getpid()

    def process(self, item: BatchItem) -> task.Outcome:
        return task.run_one(self.engine, item, self.out, self.batch)


class _Slot:
    """One actor of the pool: its handle, name and process id, and its inputs in flight."""

    def __init__(self, handle: Any, name: str, pid: int) -> None:
        self.handle = handle
        self.name = name
        self.pid = pid
        self.busy = 0


class RayExecutor:
    """Runs a batch on Ray (see the module docstring).

    Args:
        batch: the batch options (every actor's engine uses them).
        out: the output folder, the same path on every node.
        address: ``"auto"`` (join the running cluster, else start one here) or an address.
        workers: number of actors (0: one per GPU, else one per `cpus_per_worker` CPUs).
        cpus_per_worker: CPUs each actor reserves where there is no GPU.
    """

    name = "ray"

    def __init__(self, batch: task.BatchOptions, out: Path, *, address: str = "auto",
                 workers: int = 0, cpus_per_worker: float = 1.0) -> None:
        self.batch = batch
        self.out = out
        self.address = address
        self.workers = workers
        self.cpus_per_worker = max(0.01, cpus_per_worker)
        self.ray = import_ray()  # fail before anything starts when Ray is missing
        self.slots: list[_Slot] = []
        #: Called with each new actor's (name, pid): progress display, tests.
        self.on_worker: Callable[[str, int], None] | None = None

    # ------------------------------------------------------------------ the pool

    def _connect(self) -> bool:
        """Join or start a cluster; True when this call started it (then shut it down)."""
        ray = self.ray
        if ray.is_initialized():
            return False
        address = None if self.address == "auto" else self.address
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        return True

    def _actor_class(self) -> Any:
        resources = self.ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        batch = self.batch
        if gpus:
            count = self.workers or gpus
            options: dict[str, Any] = {"num_gpus": 1, "num_cpus": 1}
        else:
            count = self.workers or max(1, int(resources.get("CPU", 1) // self.cpus_per_worker))
            options = {"num_cpus": self.cpus_per_worker}
            if not batch.threads:
                batch = task.BatchOptions(**{**vars(batch),
                                             "threads": max(1, int(self.cpus_per_worker))})
        self.count = count
        self.actor_batch = batch
        return self.ray.remote(max_restarts=0, max_task_retries=0, **options)(Worker)

    def _start_actors(self, cls: Any, n: int) -> list[_Slot]:
        handles = [cls.remote(self.actor_batch, str(self.out)) for _ in range(n)]
        idents = self.ray.get([h.ident.remote() for h in handles])
        slots = [_Slot(h, name, pid) for h, (name, pid) in zip(handles, idents, strict=True)]
        for slot in slots:
            if self.on_worker is not None:
                self.on_worker(slot.name, slot.pid)
        return slots

    # ------------------------------------------------------------------ the run

    def run(self, items: list[BatchItem], on_start: Callable[..., None],
            on_outcome: Callable[[BatchItem, task.Outcome, str], None]) -> None:
        """Process `items` on the pool; returns when each is done or failed. On
        `KeyboardInterrupt` the actors are stopped (their inputs stay unfinished)."""
        started = self._connect()
        try:
            cls = self._actor_class()
            self.slots = self._start_actors(cls, min(self.count, max(1, len(items))))
            self._drive(cls, items, on_start, on_outcome)
        finally:
            for slot in self.slots:
                self.ray.kill(slot.handle, no_restart=True)
            self.slots = []
            if started:
                self.ray.shutdown()

    def _drive(self, cls: Any, items: list[BatchItem], on_start: Callable[..., None],
               on_outcome: Callable[[BatchItem, task.Outcome, str], None]) -> None:
        ray = self.ray
        pending = collections.deque((item, 0) for item in items)
        in_flight: dict[Any, tuple[BatchItem, int, _Slot]] = {}
        while pending or in_flight:
            for slot in self.slots:
                while pending and slot.busy < IN_FLIGHT_PER_WORKER:
                    item, deaths = pending.popleft()
                    on_start(item, slot.name, deaths)
                    in_flight[slot.handle.process.remote(item)] = (item, deaths, slot)
                    slot.busy += 1
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                item, deaths, slot = in_flight.pop(ref)
                slot.busy -= 1
                outcome = self._result(ref)
                if outcome is not None:
                    on_outcome(item, outcome, slot.name)
                    continue
                self._replace(cls, slot)
                if deaths + 1 >= MAX_WORKER_DEATHS:
                    on_outcome(item, task.failed(ErrorCode.INTERNAL, (
                        f"the worker separating it died {deaths + 1} times (out of memory, "
                        "or a node lost); check the worker logs")), slot.name)
                else:
                    pending.appendleft((item, deaths + 1))

    def _result(self, ref: Any) -> task.Outcome | None:
        """The outcome of a finished call; None when its actor or node died."""
        exc = self.ray.exceptions
        try:
            outcome: task.Outcome = self.ray.get(ref)
        except exc.RayTaskError as err:  # the task raised: a bug, not a lost worker
            return task.failed(ErrorCode.INTERNAL, f"separation failed unexpectedly: {err}")
        except exc.RayError:
            return None
        return outcome

    def _replace(self, cls: Any, dead: _Slot) -> None:
        """Put a new actor in the dead one's place (once, however many inputs it held)."""
        if dead not in self.slots:
            return
        self.ray.kill(dead.handle, no_restart=True)
        index = self.slots.index(dead)
        self.slots[index] = self._start_actors(cls, 1)[0]
        self.slots[index].busy = 0
