"""Compiled forwards: a model's network compiled once per window shape and precision,
built in the background, served when ready, eager until then and whenever unavailable.

    fast = FastForward(module, identity={"model": "htdemucs", "version": "4"},
                       cache=ArtifactCache(models_dir / ".compiled"))
    fast.start((1, 2, 343980), "bf16")   # returns at once; builds in a thread
    out = fast(x)                        # eager until the build is done and checked

The compiler is `torch.compile` (inductor, with the window's shape fixed), of the whole
forward or of the parts a model's `compiler` chooses (demucs: its layers, STFT eager). Its generated
code is kept in the artifact cache (`engine.artifacts`) keyed by the model's identity and
weights, the shape, the precision and the library versions, so a later process loads it
instead of compiling again (tracing still takes seconds: that too runs in the background).
Before a compiled forward is served, it runs once on a probe window and its output is
compared with the eager forward's on the same window (`TOLERANCE`); one that differs is
never used. Everything that can go wrong (no C++ compiler, a torch without
`torch.compile`, a compile error, a damaged cache) leaves the eager forward in place and
says why in `FastForward.status` and the log. Nothing is compiled unless
``STEMBRIDGE_COMPILE=on`` (off by default, see `protocol.settings.compile_backend`).

With ``STEMBRIDGE_COMPILE=onnx`` the builder is a model's `exporter` instead
(`engine.onnxlayers`: its layers exported to ONNX and run by onnxruntime), fp32 only,
cached and checked the same way; a model without an exporter, or no onnxruntime, stays
eager.

With ``STEMBRIDGE_COMPILE=graphs`` (CUDA only, never on the CPU) the forward for the
window shape is captured as a CUDA graph (`engine.graphs`) and replayed: no compiler,
nothing cached on disk, checked the same way; without a CUDA device it stays eager.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.artifacts import ArtifactCache, library_versions, weights_digest
from protocol import settings

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: largest |compiled - eager| accepted on the probe window, relative to the output's
#: peak: fp32 must agree to float rounding; bf16 to bf16 rounding (about 2^-8).
TOLERANCE = {"fp32": 1e-4, "bf16": 3e-2, "fp16": 3e-3}

Shape = tuple[int, ...]


def unavailable_reason(backend: str | None = "setting") -> str | None:
    """Why `backend` (default: the one ``STEMBRIDGE_COMPILE`` names; None: off) cannot
    run here (None when it can): the setting, the
    torch version, Python's support for dynamo, a C++ compiler for inductor's CPU code
    (the search inductor itself does: ``$CXX``, else g++); for "onnx", onnxruntime."""
    if backend == "setting":
        backend = settings.compile_backend()
    if backend is None:
        return "switched off (STEMBRIDGE_COMPILE is not on)"
    if backend == "onnx":
        from engine import onnxlayers

        return onnxlayers.unavailable_reason()
    if backend == "graphs":
        from engine import graphs

        return graphs.unavailable_reason()
    import torch

    if not hasattr(torch, "compile") or not hasattr(torch.compiler, "save_cache_artifacts"):
        return f"torch {torch.__version__} has no torch.compile with cache artifacts"
    try:
        import torch._dynamo

        if not torch._dynamo.is_dynamo_supported():
            return "this Python is not supported by torch.compile"
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except (ImportError, RuntimeError, OSError) as exc:
        return f"no C++ compiler for torch.compile ({exc})"
    return None


def current_precision(device_type: str) -> str:
    """The precision autocast runs in on `device_type` right now: fp32, bf16 or fp16."""
    import torch

    if not torch.is_autocast_enabled(device_type):
        return "fp32"
    return "bf16" if torch.get_autocast_dtype(device_type) == torch.bfloat16 else "fp16"


def _precision_context(precision: str, device_type: str
                       ) -> contextlib.AbstractContextManager[object]:
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device_type, dtype=dtype)


class FastForward:
    """A module's forward, compiled per (input shape, precision) in the background.

    Args:
        module: the network, in eval mode; called as ``module(x)``.
        identity: what names the model (name, version); the weights' digest is added.
        cache: where compiled code is kept between processes.
        compiler: module -> a callable with the same forward, compiled where it pays
            (e.g. only the parts without complex tensors); default: the whole forward
            through ``torch.compile(dynamic=False)``. Its name is part of the key.
        exporter: (module, probe window, cached payload or None) -> (a callable with
            the same forward, the payload to cache): the "onnx" backend
            (`engine.onnxlayers.export_layers` on the model's layers); None: no such path.
    """

    def __init__(self, module: Any, identity: dict[str, Any], cache: ArtifactCache,
                 compiler: Callable[[Any], Any] | None = None,
                 exporter: Callable[[Any, Any, bytes | None], tuple[Any, bytes]] | None = None
                 ) -> None:
        self.module = module
        self.compiler = compiler
        self.exporter = exporter
        self.identity = dict(identity)
        self.cache = cache
        self._ready: dict[tuple[Shape, str], Callable[[Any], Any]] = {}
        self._threads: dict[tuple[Shape, str], threading.Thread] = {}
        self._lock = threading.Lock()
        self._digest: str | None = None
        #: (shape, precision) -> "building", "ready (... s)" or why it is not used
        self.status: dict[tuple[Shape, str], str] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``module(x)``: compiled when a checked build for x's shape and the current
        autocast precision is ready, else eager."""
        fn = self._ready.get((tuple(x.shape), current_precision(x.device.type)))
        return self.module(x) if fn is None else fn(x)

    def join(self) -> None:
        """Wait for every build started so far."""
        for thread in list(self._threads.values()):
            thread.join()

    def ready(self, shape: Shape, precision: str) -> bool:
        return (tuple(shape), precision) in self._ready

    def key(self, shape: Shape, precision: str, device_type: str,
            backend: str = "inductor") -> dict[str, Any]:
        """The artifact cache key of one build."""
        if self._digest is None:
            self._digest = weights_digest(self.module)
        versions = library_versions()
        if backend == "onnx":
            from engine import onnxlayers

            builder = "onnx:" + getattr(self.exporter, "__name__", "?")
            versions["onnxruntime"] = onnxlayers.version()
            versions["opset"] = str(onnxlayers.OPSET)
        else:
            builder = "inductor:" + getattr(self.compiler, "__name__", "whole")
        return {**self.identity, "weights": self._digest, "shape": list(shape),
                "precision": precision, "device": device_type, "backend": builder,
                "versions": versions}

    def start(self, shape: Shape, precision: str, device_type: str = "cpu"
              ) -> threading.Thread | None:
        """Build for `shape` and `precision` in a daemon thread (once); returns the thread,
        or None when nothing is to be built (already built or building, or unavailable)."""
        slot = (tuple(shape), precision)
        with self._lock:
            if slot in self._ready or slot in self._threads:
                return None
            backend = settings.compile_backend()
            reason = unavailable_reason(backend)
            if reason is None and backend == "graphs" and device_type != "cuda":
                reason = f"CUDA graphs run on a CUDA device, not {device_type}"
            if reason is None and backend == "onnx":
                reason = ("no ONNX path for this model" if self.exporter is None else
                          None if precision == "fp32" else
                          f"onnxruntime runs fp32 only, not {precision}")
            if reason is not None:
                self.status[slot] = f"eager: {reason}"
                return None
            self.status[slot] = "building"
            thread = threading.Thread(target=self._build, args=(slot, device_type, backend),
                                      name=f"stembridge-compile-{self.identity.get('model')}",
                                      daemon=True)
            self._threads[slot] = thread
        thread.start()
        return thread

    def _build(self, slot: tuple[Shape, str], device_type: str, backend: str = "inductor"
               ) -> None:
        shape, precision = slot
        t0 = time.perf_counter()
        try:
            if backend == "onnx":
                fn, source = self._export(shape, device_type)
            elif backend == "graphs":
                fn, source = self._capture(shape, precision, device_type)
            else:
                fn, source = self._compile(shape, precision, device_type)
        except Exception as exc:  # any compiler failure: stay eager, say why
            log.warning("compiling %s for %s %s failed, staying eager: %s",
                        self.identity.get("model"), shape, precision, exc)
            self.status[slot] = f"eager: compile failed ({type(exc).__name__}: {exc})"
            return
        if fn is None:
            self.status[slot] = f"eager: {source}"
            return
        self._ready[slot] = fn
        self.status[slot] = f"ready ({source}, {time.perf_counter() - t0:.1f} s)"
        log.info("%s %s %s: compiled forward %s", self.identity.get("model"), shape,
                 precision, self.status[slot])

    def _compile(self, shape: Shape, precision: str, device_type: str
                 ) -> tuple[Callable[[Any], Any] | None, str]:
        """(compiled fn, where its code came from), or (None, why it is refused)."""
        import torch

        key = self.key(shape, precision, device_type)
        payload = self.cache.read(key)
        source = "built"
        if payload is not None:
            try:
                torch.compiler.load_cache_artifacts(payload)
                source = "from the cache"
            except Exception as exc:  # a payload torch cannot use: rebuild it
                self._drop(key, "compiled-model", exc)
                payload = None
        module = self.module
        compiled = (torch.compile(module, dynamic=False) if self.compiler is None
                    else self.compiler(module))

        def run(x: torch.Tensor) -> torch.Tensor:
            with _precision_context(precision, device_type):
                return compiled(x)

        probe = _probe(module, shape)
        refused = _differs(run, module, probe, precision, device_type)
        if refused:
            return None, refused
        if payload is None:
            artifacts = torch.compiler.save_cache_artifacts()
            if artifacts is not None:
                self.cache.write(key, artifacts[0])
        return run, source

    def _capture(self, shape: Shape, precision: str, device_type: str
                 ) -> tuple[Callable[[Any], Any] | None, str]:
        """The "graphs" backend's build: (replayed CUDA graph, "CUDA graph"), or (None,
        why it is refused)."""
        from engine import graphs

        probe = _probe(self.module, shape)
        fn = graphs.capture(self.module, probe, precision)
        refused = _differs(fn, self.module, probe, precision, device_type)
        return (None, refused) if refused else (fn, "CUDA graph")

    def _drop(self, key: dict[str, Any], what: str, exc: BaseException) -> None:
        """Delete the cached artifact at `key` that could not be used (it is rebuilt)."""
        log.warning("%s cache for %s unusable (%s): rebuilding", what, key.get("model"), exc)
        with contextlib.suppress(OSError):
            self.cache.path(key).unlink()

    def _export(self, shape: Shape, device_type: str) -> tuple[Callable[[Any], Any] | None, str]:
        """The "onnx" backend's build (fp32): (fn, where its layers came from), or
        (None, why it is refused)."""
        assert self.exporter is not None
        key = self.key(shape, "fp32", device_type, "onnx")
        payload = self.cache.read(key)
        probe = _probe(self.module, shape)
        fn = None
        if payload is not None:
            try:
                fn, _ = self.exporter(self.module, probe, payload)
                source = "ONNX, from the cache"
            except Exception as exc:  # a payload onnxruntime cannot use: rebuild it
                self._drop(key, "ONNX", exc)
                payload = None
        if fn is None:
            fn, fresh = self.exporter(self.module, probe, None)
            source = "ONNX, exported"
        refused = _differs(fn, self.module, probe, "fp32", device_type)
        if refused:
            return None, refused
        if payload is None:
            self.cache.write(key, fresh)
        return fn, source


def _probe(module: Any, shape: Shape) -> torch.Tensor:
    """The window a build is checked on: seeded noise of `shape` on the module's device."""
    import torch

    return torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(
        next(iter(module.parameters())).device)


def _differs(fn: Callable[[Any], Any], module: Any, probe: torch.Tensor, precision: str,
             device_type: str) -> str | None:
    """Why `fn` may not replace `module` (its output on `probe` is further from eager's
    than `TOLERANCE`, relative to the peak), or None."""
    import torch

    with torch.inference_mode():
        got = fn(probe).float()
        with _precision_context(precision, device_type):
            want = module(probe).float()
    err = float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))
    if not err <= TOLERANCE[precision]:
        return f"compiled output differs from eager by {err:.2e} (relative)"
    return None
