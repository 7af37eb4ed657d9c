"""The engine API: a long-lived `Engine` holding warm models, and `Job`s that stream
finalized regions.

    engine = Engine(EngineConfig())
    job = engine.prepare(SplitRequest("song.flac", stems=2, start_at=42.0))
    for region in job.run(cancel=token, on_progress=print):
        ...  # region.stems["vocals"]: (channels, frames) float32 at the source rate
    job.result.metadata                           # model, runtime, device, warnings, ...

`prepare` validates the input (before any model runs) and resolves model and stems;
`run` loads the model if it is not warm yet, separates in the requested order, and
stores the result in the cache. A cache hit replays the stored stems at once.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine import __version__ as ENGINE_VERSION
from engine import allocator
from engine.config import EngineConfig
from engine.errors import InvalidArgumentError, StembridgeError
from protocol.messages import SplitRequest

if TYPE_CHECKING:
    import torch

    from engine.audio import DecodedAudio
    from engine.audio.source import SourceFile
    from engine.cache import CacheEntry
    from engine.models.base import ModelSpec, SeparationModel
    from engine.stems import StemPlan

__all__ = ["CACHE_REPLAY_SECONDS", "Engine", "Job", "JobResult", "Progress", "Region",
           "SplitRequest", "check_request"]

#: Seconds of audio per region replayed from the cache.
CACHE_REPLAY_SECONDS = 30.0
#: Numbers the jobs of this process (`Job.label`).
_JOB_NUMBERS = itertools.count(1)


@dataclass
class Region:
    """A finalized stretch of every output stem, at the source sample rate.

    Attributes:
        start, end: frame range ``[start, end)`` at `samplerate`.
        samplerate: the input file's rate in Hz.
        stems: stem name -> float32 array (channels, end - start); channels as the input.
    """

    start: int
    end: int
    samplerate: int
    stems: dict[str, np.ndarray]

    @property
    def start_seconds(self) -> float:
        return self.start / self.samplerate

    @property
    def end_seconds(self) -> float:
        return self.end / self.samplerate


@dataclass
class Progress:
    """Job progress: regions final so far of all, seconds elapsed, ETA in seconds."""

    regions_done: int
    regions_total: int
    frames_done: int
    frames_total: int
    elapsed: float
    eta: float | None


@dataclass
class JobResult:
    """Metadata of a finished job (see `Job.metadata_dict`)."""

    metadata: dict[str, Any]
    cache_entry: CacheEntry | None = None


@dataclass
class Timings:
    """Seconds spent per stage of one job."""

    decode: float = 0.0
    model_load: float = 0.0
    first_region: float | None = None
    forward: float = 0.0
    total: float = 0.0


def check_request(request: SplitRequest, models_root: Path | None = None
                  ) -> tuple[ModelSpec, StemPlan, float]:
    """The model spec, stem plan and overlap of `request`, without reading the audio or
    loading a model (a server answers an impossible request before accepting it).
    `models_root`: the engine's models directory, where a trained mixer named
    ``ensemble:NAME`` is looked up (its spec then names the folder absolutely; default:
    the environment's). Raises `StembridgeError` (``model_unknown``,
    ``stems_unsupported``, ``invalid_argument``)."""
    from engine.models import registry, stemmixer
    from engine.stems import plan_stems

    name = registry.choose_model(request.model, request.stems)
    if models_root is not None:
        name = stemmixer.absolute_name(name, models_root)
    spec = registry.get_spec(name)
    plan = plan_stems(name, spec.sources, request.stems, request.only, request.rest)
    overlap = spec.default_overlap if request.overlap is None else request.overlap
    if not 0.0 <= overlap < 1.0:
        raise InvalidArgumentError(
            f"The overlap is a fraction of a window in [0, 1), not {overlap}.")
    if request.start_at < 0:
        raise InvalidArgumentError(
            f"The start position must be >= 0 seconds, not {request.start_at}.")
    return spec, plan, overlap


class Engine:
    """Holds loaded models warm across jobs; thread-safe model loading.

    Args:
        config: device, precision, batch size, cache and model folders.
    """

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self._models: dict[str, SeparationModel] = {}
        self._lock = threading.Lock()
        self._device: torch.device | None = None
        self._precision: str | None = None
        self._batcher: Any = None
        allocator.configure()  # before torch's threads first allocate: engine.allocator
        if self.config.threads:
            import torch

            torch.set_num_threads(self.config.threads)

    @property
    def device(self) -> torch.device:
        if self._device is None:
            from engine.device import select_device

            self._device = select_device(self.config.device)
        return self._device

    @property
    def precision(self) -> str:
        if self._precision is None:
            from engine.device import select_precision

            self._precision = select_precision(self.device, self.config.precision)
        return self._precision

    def batcher(self) -> Any:
        """The `engine.batcher.WindowBatcher` the jobs of this engine's device share
        (started on first use, again after `stop_batching`), or None when
        `config.batcher` leaves it off for this device."""
        if not self.config.batcher_enabled(self.device.type):
            return None
        with self._lock:
            if self._batcher is None or self._batcher.closed:
                from engine.batcher import WindowBatcher, pass_limit

                self._batcher = WindowBatcher(pass_limit(self.config, self.device),
                                              max_wait=self.config.batcher_wait_ms / 1000)
            return self._batcher

    def stop_batching(self) -> None:
        """Close the batcher (its waiting windows fail with `BatcherClosedError`); the
        next job starts a new one."""
        with self._lock:
            batcher, self._batcher = self._batcher, None
        if batcher is not None:
            batcher.close()

    def loaded_models(self) -> list[str]:
        return list(self._models)

    def model(self, name: str) -> SeparationModel:
        """The warm model `name`, loading it on first use; least recently used models are
        unloaded to keep the warm set within `config.model_memory_mb`."""
        with self._lock:
            if name in self._models:
                self._models[name] = self._models.pop(name)  # most recently used last
                return self._models[name]
            from engine.models import registry

            model = registry.load(name, self.device, self.config.resolved_models_dir())
            self._models[name] = model
            if self.config.compile:
                self._accelerate(model)
            budget = self.memory_budget()
            while len(self._models) > 1 and sum(map(_model_bytes, self._models.values())) > budget:
                oldest = next(iter(self._models))
                del self._models[oldest]
                if self.device.type == "cuda":
                    import torch

                    torch.cuda.empty_cache()
            return model

    def accelerate(self, name: str, *, wait: bool = False) -> list[Any]:
        """Start compiling model `name`'s forward for this engine's precision and batch
        size in the background (`engine.acceleration`; its code is cached under
        ``<models dir>/.compiled``); jobs run eagerly until it is ready. `wait`: return
        when every build has finished (benchmarks). Returns the `FastForward`s (their
        `status` says what happened); [] for a model without a compiled path."""
        fasts = self._accelerate(self.model(name))
        if wait:
            for fast in fasts:
                fast.join()
        return fasts

    def _accelerate(self, model: Any) -> list[Any]:
        hook = getattr(model, "accelerate", None)
        if hook is None:
            return []
        from engine.artifacts import ArtifactCache

        cache = ArtifactCache(self.config.resolved_models_dir() / ".compiled")
        return list(hook(cache, self.precision, self.config.batch_size or 1))

    def memory_budget(self) -> int:
        """Bytes the warm models' weights may take (see `EngineConfig.model_memory_mb`)."""
        if self.config.model_memory_mb:
            return int(self.config.model_memory_mb * 2**20)
        if self.device.type == "cuda":
            import torch

            return torch.cuda.get_device_properties(self.device).total_memory // 2
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
        except (ValueError, OSError, AttributeError):
            return 4 * 2**30

    def unload(self, name: str) -> None:
        with self._lock:
            self._models.pop(name, None)

    def prepare(self, request: SplitRequest) -> Job:
        """Validate the input and resolve model and stems; raises before any model runs."""
        from engine import audio
        from engine.audio.source import SourceFile

        spec, plan, overlap = check_request(request, self.config.resolved_models_dir())
        t0 = time.perf_counter()
        limits = self.config.limits
        source = SourceFile(request.path, limits.max_source_bytes)
        try:
            decoded, warnings = audio.load(Path(request.path), limits)
            source.check_unchanged()  # the decoder read the inode `source` pins
            if request.section_start or request.section_length is not None:
                decoded = _section(decoded, request.section_start, request.section_length)
            duration = decoded.samples.shape[-1] / decoded.samplerate
            if request.start_at > duration:
                raise InvalidArgumentError(
                    f"The start time {request.start_at:g} s lies beyond the end of the audio "
                    f"({duration:.3f} s long); choose a start time from 0 to {duration:.3f} s.")
        except BaseException:
            source.close()
            raise
        return Job(self, request, spec, plan, overlap, decoded, warnings,
                   decode_seconds=time.perf_counter() - t0, source=source)

    def split(self, request: SplitRequest, **run_kwargs: Any) -> tuple[Job, list[Region]]:
        """Convenience for tests and scripts: run a job to the end, keep every region."""
        job = self.prepare(request)
        regions = list(job.run(**run_kwargs))
        return job, regions


class Job:
    """One separation: created by `Engine.prepare`, executed by `run`. `label` names it
    to the engine's batcher (the server sets its job id; default ``job-<n>``)."""

    def __init__(self, engine: Engine, request: SplitRequest, spec: ModelSpec,
                 plan: StemPlan, overlap: float, decoded: DecodedAudio,
                 warnings: list[str], decode_seconds: float,
                 source: SourceFile | None = None) -> None:
        self.engine = engine
        self.source = source
        self.request = request
        self.spec = spec
        self.plan = plan
        self.overlap = overlap
        self.audio = decoded
        self._frames = int(decoded.samples.shape[-1])
        self._channels = int(decoded.samples.shape[0])
        self.warnings = list(warnings)
        self.timings = Timings(decode=decode_seconds)
        self.result: JobResult | None = None
        self.cache_hit = False
        self._key: str | None = None
        self._resume: list[tuple[int, int]] = []
        self.label = f"job-{next(_JOB_NUMBERS)}"

    # ------------------------------------------------------------------ facts

    @property
    def stem_names(self) -> tuple[str, ...]:
        return self.plan.names

    @property
    def samplerate(self) -> int:
        return self.audio.samplerate

    @property
    def frames(self) -> int:
        return self._frames

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def precision(self) -> str:
        """The precision this job's model really runs in (an MDX-Net ONNX model: fp32,
        whatever the engine's), as recorded in the metadata and the cache key."""
        from engine.models.catalog import run_precision

        return run_precision(self.spec, self.engine.precision)

    def cache_key(self, cancel: Any = None) -> str:
        """The results-cache key: the sha256 of the bytes that were decoded (read
        through the descriptor `prepare` opened, proven unchanged since), model, stems,
        overlap, precision. Raises SOURCE_CHANGED when the file changed since."""
        if self._key is None:
            from engine.audio.source import SourceFile
            from engine.cache import cache_key

            if self.source is None:  # a Job built by hand: pin the file now
                self.source = SourceFile(self.request.path,
                                         self.engine.config.limits.max_source_bytes)
            digest = self.source.sha256(self.engine.config.limits.read_timeout, cancel)
            section = ""
            if self.request.section_start or self.request.section_length is not None:
                section = f"|section={self.request.section_start!r}:{self.request.section_length!r}"
            from engine.models.store import weights_id

            weights = weights_id(self.spec.name, self.engine.config.resolved_models_dir())
            self._key = cache_key(digest, self.spec.name, f"{self.spec.version}|{weights}",
                                  self.plan.config_id() + section,
                                  self.overlap, self.precision)
        return self._key

    def check_source(self) -> None:
        """Raise SOURCE_CHANGED unless the source is still the file that was decoded."""
        if self.source is not None:
            self.source.check_unchanged()

    def close(self) -> None:
        """Let go of the source file (`run` does this when it ends)."""
        if self.source is not None:
            self.source.close()

    def metadata_dict(self, *, runtime: float) -> dict[str, Any]:
        info = self.audio.info
        return {
            "engine_version": ENGINE_VERSION,
            "model_name": self.spec.name,
            "model_version": self.spec.version,
            "runtime": "torch",
            "runtime_seconds": round(runtime, 4),
            "device": str(self.engine.device),
            "precision": self.precision,
            "overlap": self.overlap,
            "stems": list(self.plan.names),
            "warnings": list(self.warnings),
            "cache_hit": self.cache_hit,
            "start_at": self.request.start_at,
            "input": {
                "path": str(self.request.path),
                "section_start": self.request.section_start,
                "section_length": self.request.section_length,
                "duration": round(self.frames / self.samplerate, 6),
                "samplerate": self.samplerate,
                "channels": self.channels,
                "frames": self.frames,
                "format": info.format,
                "subtype": info.subtype,
            },
            "timings": {k: (round(v, 4) if isinstance(v, float) else v)
                        for k, v in asdict(self.timings).items()},
        }

    # ------------------------------------------------------------------ running

    def run(self, *, cancel: Any = None, on_progress: Callable[[Progress], None] | None = None,
            resume: list[tuple[int, int]] | None = None) -> Iterator[Region]:
        """Yield every output `Region` once, in the order they become final; afterwards
        `self.result` holds the metadata. Raises `CancelledError` when `cancel` is set.

        `resume`: frame ranges (source rate) a previous, interrupted run already produced.
        When the source rate is the model's, the regions inside them are skipped (neither
        computed nor yielded); otherwise everything is recomputed. A resumed run does not
        write the cache (it never sees the whole result)."""
        t0 = time.perf_counter()
        self._resume = list(resume or [])
        cache = None
        store = None
        try:
            if self.engine.config.use_cache and not self._resume:
                from engine.cache import CacheWriter, ResultCache

                cache = ResultCache(self.engine.config.resolved_cache_dir(),
                                    self.engine.config.cache_max_bytes)
                entry = cache.get(self.cache_key(cancel))
                if entry is not None:
                    self.cache_hit = True
                    yield from self._replay(entry, on_progress, t0)
                    self.timings.total = time.perf_counter() - t0
                    self.result = JobResult(self.metadata_dict(runtime=self.timings.total),
                                            entry)
                    return
            store = CacheWriter(cache, self) if cache is not None else None
            for region in self._compute(cancel, on_progress, t0):
                if store is not None:
                    store.write(region)
                yield region
            self.timings.total = time.perf_counter() - t0
            meta = self.metadata_dict(runtime=self.timings.total)
            # only a result of a source unchanged over the whole job is cached
            self.check_source()
            entry = store.commit(meta) if store is not None else None
            self.result = JobResult(meta, entry)
        finally:
            if store is not None:
                store.abort()
            self.close()

    def _replay(self, entry: CacheEntry, on_progress: Callable[[Progress], None] | None,
                t0: float) -> Iterator[Region]:
        import soundfile as sf

        files = {name: sf.SoundFile(str(entry.files[name])) for name in self.plan.names}
        try:
            block = max(1, int(CACHE_REPLAY_SECONDS * self.samplerate))
            starts = list(range(0, self.frames, block))
            first = int(self.request.start_at * self.samplerate) // block * block
            order = [s for s in starts if s >= first] + [s for s in starts if s < first]
            done = 0
            for i, start in enumerate(order):
                n = min(block, self.frames - start)
                stems = {}
                for name, fh in files.items():
                    fh.seek(start)
                    stems[name] = np.ascontiguousarray(fh.read(n, dtype="float32",
                                                                always_2d=True).T)
                if self.timings.first_region is None:
                    self.timings.first_region = time.perf_counter() - t0
                yield Region(start, start + n, self.samplerate, stems)
                done += n
                if on_progress is not None:
                    on_progress(Progress(i + 1, len(order), done, self.frames,
                                         time.perf_counter() - t0, 0.0))
        finally:
            for fh in files.values():
                fh.close()

    def _compute(self, cancel: Any, on_progress: Callable[[Progress], None] | None,
                 t0: float) -> Iterator[Region]:
        import torch

        from engine import audio
        from engine.chunking import ChunkProgress, ChunkStats, iter_separate
        from engine.device import auto_batch_size, autocast_factory

        engine = self.engine
        tl = time.perf_counter()
        model = engine.model(self.spec.name)
        self.timings.model_load = time.perf_counter() - tl
        sr_model = self.spec.samplerate
        mix_np = audio.to_model_channels(self.audio.samples, 2)
        if self.samplerate != sr_model:
            mix_np = audio.resample(mix_np, self.samplerate, sr_model)
        if not mix_np.flags.writeable:  # e.g. ffmpeg's read-only buffer: normalised in place
            mix_np = mix_np.copy()
        # The job owns the decoded audio: release it (the model-rate mix replaces it), so
        # a long song is held once, not three times.
        self.audio.samples = np.zeros((self._channels, 0), np.float32)
        mix = torch.from_numpy(np.ascontiguousarray(mix_np, dtype=np.float32))
        del mix_np
        mean, std = 0.0, 1.0
        if model.normalize_input:
            mean, std = _mono_mean_std(mix)
            if std < 1e-8:  # silent input: nothing to normalise
                mean, std = 0.0, 1.0
            mix.sub_(mean).div_(std)  # in place: `mix` is our own buffer
        total_model = mix.shape[-1]
        resampler = audio.RegionResampler(sr_model, self.samplerate, total_model)
        groups = [list(s) for s in self.plan.sources]
        batch = engine.config.batch_size or auto_batch_size(
            engine.device, self.spec.window_bytes)
        stats = ChunkStats()
        frames_done = 0
        regions_done = 0

        def chunk_progress(p: ChunkProgress) -> None:
            if on_progress is not None:
                on_progress(Progress(p.regions_done, p.regions_total, frames_done,
                                     self.frames, time.perf_counter() - t0, p.eta))

        start_at = int(round(self.request.start_at * sr_model))
        already = self._resume if self.samplerate == sr_model else []
        batcher = engine.batcher()
        forward = None
        if batcher is not None and getattr(model, "iter_regions", None) is None:
            from engine.batcher import rank

            forward = functools.partial(batcher.forward, model, precision=self.precision,
                                        priority=rank(self.request.priority),
                                        job=self.label, cancel=cancel)
        regions = iter_separate(
            model, mix, overlap=self.overlap, batch_size=batch, first_batch=1,
            start_at=start_at, already_final=already, cancel=cancel, stats=stats,
            autocast=autocast_factory(engine.device, self.precision),
            progress=chunk_progress, forward=forward)
        try:
            for fr in regions:
                src = fr.audio
                if std != 1.0 or mean != 0.0:  # undo per model source, as demucs does
                    src = src * std + mean
                out = torch.stack([src[g].sum(0) if len(g) > 1 else src[g[0]] for g in groups])
                for dst_start, arr in resampler.push(fr.start, out.numpy()):
                    arr = audio.from_model_channels(arr, self.channels)
                    stems = {name: np.ascontiguousarray(arr[k], dtype=np.float32)
                             for k, name in enumerate(self.plan.names)}
                    frames_done += arr.shape[-1]
                    regions_done += 1
                    if self.timings.first_region is None:
                        self.timings.first_region = time.perf_counter() - t0
                    yield Region(dst_start, dst_start + arr.shape[-1], self.samplerate, stems)
        finally:
            if batcher is not None:
                batcher.finish_job(self.label)
        self.timings.forward = stats.forward_seconds
        frames_done += sum(b - a for a, b in already)
        if frames_done != self.frames:
            raise StembridgeError(f"internal: produced {frames_done} of {self.frames} frames")


def _model_bytes(model: Any) -> int:
    """Bytes of a loaded model's parameters and buffers (its warm-memory cost)."""
    nets = getattr(model, "models", None) or getattr(model, "nets", None) or []
    if not isinstance(nets, (list, tuple)):
        nets = list(nets.values()) if isinstance(nets, dict) else [nets]
    total = 0
    for net in nets:
        for t in list(net.parameters()) + list(net.buffers()):
            total += t.numel() * t.element_size()
    return total


def _section(decoded: DecodedAudio, start: float, length: float | None) -> DecodedAudio:
    """`decoded` cut to ``[start, start + length)`` seconds (length None: to the end)."""
    from dataclasses import replace

    sr = decoded.samplerate
    total = decoded.samples.shape[-1]
    a = int(round(start * sr))
    b = total if length is None else min(total, a + int(round(length * sr)))
    if start < 0 or a >= total or b <= a:
        raise InvalidArgumentError(
            f"The section {start:.3f}s + {length}s lies outside the file "
            f"({total / sr:.3f}s long): check the item's start offset and length.")
    return replace(decoded, samples=np.ascontiguousarray(decoded.samples[:, a:b]))


def _mono_mean_std(mix: torch.Tensor, block: int = 1 << 20) -> tuple[float, float]:
    """Mean and (unbiased) std of the channel average of `mix` (channels, samples), as
    demucs computes them, in blocks (no full-length temporary), accumulated in float64."""
    n = mix.shape[-1]
    total = 0.0
    for start in range(0, n, block):
        total += float(mix[:, start:start + block].mean(0).double().sum())
    mean = total / n
    sq = 0.0
    for start in range(0, n, block):
        sq += float(((mix[:, start:start + block].mean(0).double() - mean) ** 2).sum())
    return mean, (sq / max(1, n - 1)) ** 0.5
