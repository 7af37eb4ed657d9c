"""The Ray executor: actors that each hold a warm engine, one task per input, driven and
counted on the driver (this process).

* **Actors**: `Worker` wrapped with ``ray.remote`` when the batch starts (Ray is imported
  only then). On a cluster with GPUs each actor reserves ``num_gpus=1`` (one actor per
  GPU by default); otherwise ``--cpus-per-worker`` CPUs (one actor per that many CPUs) and
  as many torch threads. An actor loads its model on its first input and keeps it warm.
* **Back-pressure**: at most `IN_FLIGHT_PER_WORKER` inputs are queued per actor; the
  driver submits the next input when one finishes, so memory stays bounded however long
  the catalogue (an input is a path and a few options until an actor decodes it).
* **Overlap**: an actor runs its two calls in two threads (``max_concurrency``): each
  call decodes (and stages) its input at once, then waits for the actor's one separation
  lock, so the next input is decoded while the current one is separated, as in the local
  executor; at most two decoded inputs per actor. ``prefetch=False`` runs the calls one
  after the other (the benchmark's reference).
* **Retries**: when an actor or its node dies (killed, out of memory, node lost), each
  input it held is given to a live actor again (a new actor replaces the dead one), up to
  `MAX_WORKER_DEATHS` times per input. A retried input cannot leave duplicate or corrupt
  outputs: its folder is the same, every file in it is replaced atomically, and the
  retry first removes the temporary files the dead attempt left (`bridge.batch.task`).
  An exception inside the task itself (a bug) fails that input and is not retried.
* **Errors**: Ray not installed raises `engine.errors.PackageMissingError`; a cluster
  address nothing answers at (checked with a plain TCP connection first: Ray itself
  would retry for minutes) and workers that die or never start (a broken install on a
  node, no node with the CPUs or GPU asked for) raise `engine.errors.ClusterError`; each
  says what to do.
* **Storage**: local inputs and output folder must be on a file system every node sees
  (the same paths on every node, e.g. NFS); URLs (``s3://...``, `bridge.batch.storage`)
  are staged and published by the actors themselves, so every node needs the store's
  fsspec package and credentials. (``memory://`` is per process: it cannot be shared
  with actors.)
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
#: Seconds to wait for a TCP connection to a cluster address, and for new actors to start
#: (a node may import torch and CUDA for the first time).
CONNECT_TIMEOUT = 5.0
ACTOR_START_TIMEOUT = 600.0
_DEFAULT_PORT = 6379  # `ray start --head`'s GCS port


def import_ray() -> Any:
    """The `ray` module; raises `PackageMissingError` saying how to install it."""
    try:
        import ray
    except ImportError:
        from engine.errors import PackageMissingError

        raise PackageMissingError("The Ray executor needs Ray, which is not installed: "
                                  f"{INSTALL_RAY} (or run the batch without --ray).") from None
    return ray


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Raise `ClusterError` unless something accepts a TCP connection at `address`
    (``host:port`` or ``ray://host:port``; the port defaults to 6379)."""
    import socket

    from engine.errors import ClusterError

    hostport = address.split("://", 1)[1] if "://" in address else address
    host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
    try:
        number = int(port) if port else _DEFAULT_PORT
    except ValueError:
        raise ClusterError(f"'{address}' is not a Ray cluster address: give the head node's "
                           "host:port (e.g. 10.0.0.5:6379), or 'auto'.") from None
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", number), timeout):
            pass
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ClusterError(
            f"No Ray cluster answers at {address} ({why}). Start one there (`ray start "
            "--head`), check the address and the firewall, or use 'auto' to start a "
            "cluster on this machine.") from None


def _first_line(err: BaseException) -> str:
    lines = [x.strip() for x in str(err).splitlines() if x.strip()]
    return lines[-1] if lines else type(err).__name__


class Worker:
    """What each Ray actor runs: one warm engine, one input per call; calls may run in
    two threads: decoding overlaps, separation is one at a time."""

    def __init__(self, batch: task.BatchOptions, out: str) -> None:
        import threading

        from engine.separator import Engine

        self.batch = batch
        self.out = Path(out)
        self.engine = Engine(batch.engine_config())
        self._separating = threading.Lock()

    def ident(self) -> tuple[str, int]:
        """(host:pid, pid) of the actor's process."""
        return task.worker_name(), os.getpid()

    def process(self, item: BatchItem) -> task.Outcome:
        prep = task.prepare(self.engine, item, self.batch)
        with self._separating:
            return task.finish(self.engine, prep, self.out, self.batch)


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
        prefetch: decode an actor's next input while it separates the current one.
    """

    name = "ray"

    def __init__(self, batch: task.BatchOptions, out: Path, *, address: str = "auto",
                 workers: int = 0, cpus_per_worker: float = 1.0,
                 prefetch: bool = True) -> None:
        self.batch = batch
        self.out = out
        self.address = address
        self.workers = workers
        self.cpus_per_worker = max(0.01, cpus_per_worker)
        self.prefetch = prefetch
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
        from engine.errors import ClusterError

        address = None if self.address == "auto" else self.address
        if address is not None and address != "local":
            check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ClusterError(f"Could not join the Ray cluster at {self.address}: "
                               f"{_first_line(err)}. Check it with `ray status` on its "
                               "head node.") from None
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
        self.actor_options = options
        concurrency = IN_FLIGHT_PER_WORKER if self.prefetch else 1
        return self.ray.remote(max_restarts=0, max_task_retries=0,
                               max_concurrency=concurrency, **options)(Worker)

    def _start_actors(self, cls: Any, n: int) -> list[_Slot]:
        """Start `n` actors and wait until each answers; raises `ClusterError` when one
        dies while starting or none starts within `ACTOR_START_TIMEOUT`."""
        from engine.errors import ClusterError

        handles = [cls.remote(self.actor_batch, str(self.out)) for _ in range(n)]
        try:
            idents = self.ray.get([h.ident.remote() for h in handles],
                                  timeout=ACTOR_START_TIMEOUT)
        except self.ray.exceptions.GetTimeoutError:
            for h in handles:
                self.ray.kill(h, no_restart=True)
            raise ClusterError(
                f"No Ray worker started within {ACTOR_START_TIMEOUT:.0f} s: no node has the "
                f"resources one asks for ({self._asks()}). Lower the CPUs per worker, or add "
                "nodes to the cluster.") from None
        except self.ray.exceptions.RayError as err:
            for h in handles:
                self.ray.kill(h, no_restart=True)
            raise ClusterError(
                f"A Ray worker died while starting ({_first_line(err)}). Check that "
                "stembridge, at this version, and its dependencies are installed on every "
                "node, and read the worker logs (`ray logs`).") from None
        slots = [_Slot(h, name, pid) for h, (name, pid) in zip(handles, idents, strict=True)]
        for slot in slots:
            if self.on_worker is not None:
                self.on_worker(slot.name, slot.pid)
        return slots

    def _asks(self) -> str:
        opts = getattr(self, "actor_options", {})
        return ", ".join(f"{k[4:]}={v:g}" for k, v in opts.items() if k.startswith("num_"))

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
