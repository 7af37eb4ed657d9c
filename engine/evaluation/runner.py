"""Evaluating models on tracks: separation through the engine's normal API, estimates
cached on disk, BSS Eval v4 per track, medians over tracks.

    result = evaluate_models(["htdemucs", "spleeter-2stems"], iter_tracks("MUSDB18-HQ"))
    result["aggregate"]["htdemucs"]["vocals"]["SDR"]   # dB, median over tracks

Each model separates each track's mixture as `stembridge split` does it (`Engine.prepare`
on a float WAV of the decoded mixture, `Job.run`). The estimates are cached per (model
name, version and weights manifest, precision, overlap, engine version; the sha256 of the
decoded mixture samples), so adding a model to an evaluation separates only with that
model; the scores are cached per (estimate, references, window, museval version). Cache
files are written atomically (`protocol.files`); an unreadable entry is computed again.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine import __version__ as ENGINE_VERSION
from engine.config import EngineConfig, user_cache_dir
from engine.errors import InvalidArgumentError
from engine.evaluation.metrics import (
    METRICS,
    bss_eval_frames,
    evaluation_sets,
    median,
    museval_module,
    museval_version,
)
from engine.evaluation.tracks import Track, samples_digest
from engine.models.store import weights_id
from protocol.files import make_temp, publish, write_json_atomic

if TYPE_CHECKING:
    from engine.separator import Engine

__all__ = ["FORMAT", "EvalProgress", "aggregate", "default_cache_dir", "evaluate_models",
           "score"]

#: Version of the result layout (`evaluate_models`' dict, `stembridge eval`'s JSON).
FORMAT = 1


def default_cache_dir() -> Path:
    """Where estimates and scores are cached: ``<user cache>/eval``."""
    return user_cache_dir() / "eval"


@dataclass
class EvalProgress:
    """Where an evaluation stands: `done` of `total` (track, model) steps, the fraction
    of the current step, seconds elapsed, ETA in seconds (None until one step is done)."""

    done: int
    total: int | None
    track: str
    model: str
    phase: str  # "separating", "scoring", "cached"
    step_fraction: float
    elapsed: float
    eta: float | None


def _sha(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


class _Store:
    """The estimate and score files under `root` (``estimates/<key>.npz``,
    ``scores/<key>.json``); `enabled` False: nothing read or written."""

    def __init__(self, root: Path, enabled: bool) -> None:
        self.root = root
        self.enabled = enabled

    def remove_stale(self) -> None:
        """Temporary files that a killed run left a day or more ago."""
        from engine.audio import remove_stale_temp_files

        for kind in ("work", "estimates", "scores"):
            if (self.root / kind).is_dir():
                remove_stale_temp_files(self.root / kind)

    def _path(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / f"{key}{suffix}"

    def get_estimates(self, key: str, frames: int) -> dict[str, np.ndarray] | None:
        path = self._path("estimates", key, ".npz")
        if not self.enabled or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["__key__"]) != key:
                    return None
                out = {n: np.array(data[n]) for n in data.files if n != "__key__"}
        except (OSError, ValueError, KeyError):
            return None
        return out if all(a.ndim == 2 and a.shape[0] == frames for a in out.values()) else None

    def put_estimates(self, key: str, estimates: dict[str, np.ndarray]) -> None:
        if not self.enabled:
            return
        folder = self.root / "estimates"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = make_temp(folder, ".npz")
        try:
            with open(tmp, "wb") as fh:
                arrays: dict[str, Any] = {"__key__": np.array(key), **estimates}
                np.savez(fh, **arrays)
            publish(tmp, self._path("estimates", key, ".npz"))
        finally:
            tmp.unlink(missing_ok=True)

    def get_scores(self, key: str) -> dict[str, Any] | None:
        path = self._path("scores", key, ".json")
        if not self.enabled or not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data.get("stems") if isinstance(data, dict) and data.get("key") == key else None

    def put_scores(self, key: str, stems: dict[str, Any]) -> None:
        if self.enabled:
            (self.root / "scores").mkdir(parents=True, exist_ok=True)
            write_json_atomic(self._path("scores", key, ".json"), {"key": key, "stems": stems})


def evaluate_models(models: Sequence[str], tracks: Iterable[Track], *,
                    engine: Engine | None = None, cache_dir: Path | None = None,
                    use_cache: bool = True, window_s: float = 1.0, total: int | None = None,
                    on_progress: Callable[[EvalProgress], None] | None = None,
                    cancel: Any = None) -> dict[str, Any]:
    """Separate every track with every model, score it with BSS Eval v4, aggregate.

    Args:
        models: model names as `stembridge split` takes them (ensembles included).
        tracks: `Track`s (e.g. `iter_tracks`), decoded one at a time.
        engine: the engine to separate with (default: one on the default config, without
            the results cache: the estimates are cached here).
        cache_dir: estimate and score cache (default `default_cache_dir()`).
        use_cache: False neither reads nor writes that cache.
        window_s: BSS Eval frame length and hop, seconds.
        total: the number of tracks, for the ETA (unknown: None).
        on_progress: called with an `EvalProgress` during and after each step.
        cancel: a cancel token for the engine's jobs (`threading.Event`-like).

    Returns:
        ``{"format", "standard", "window_s", "models": {name: {"version", "stems"}},
        "tracks": [{"name", "rate", "frames", "seconds", "mixture_sha256",
        "results": {model: {"cached", "separate_seconds", "stems": {stem: {metric: dB,
        "frames": {metric: [dB per frame]}}}}}}], "aggregate": {model: {stem: {metric: dB,
        "tracks": n}}}}``: track figures are medians over frames, aggregate figures
        medians over tracks, nan ignored (nan where nothing was scored).
    """
    if not models or len(set(models)) != len(models):
        raise InvalidArgumentError("Name one or more different models to evaluate.")
    from engine.separator import Engine, check_request

    engine = engine or Engine(EngineConfig(use_cache=False))
    for name in models:  # an unknown model fails before any track is decoded
        check_request(_request(name, Path("mixture.wav")), engine.config.resolved_models_dir())
    museval_module()  # PACKAGE_MISSING before any separation
    store = _Store(cache_dir or default_cache_dir(), use_cache)
    store.remove_stale()
    clock = _Clock(len(models) * total if total else None, on_progress)
    result: dict[str, Any] = {
        "format": FORMAT, "window_s": window_s, "engine_version": ENGINE_VERSION,
        "standard": f"BSS Eval v4 (museval {museval_version()}, images, "
                    f"window = hop = {window_s:g} s; track = median over frames, aggregate "
                    "= median over tracks, nan ignored)",
        "models": {}, "tracks": []}
    for track in tracks:
        entry = _evaluate_track(engine, models, track, store, window_s, clock, result, cancel)
        result["tracks"].append(entry)
    result["aggregate"] = aggregate(result["tracks"], list(models))
    return result


def _request(model: str, path: Path) -> Any:
    from protocol.messages import SplitRequest

    return SplitRequest(source=path, model=model)


class _Clock:
    """Counts steps and reports `EvalProgress` with an ETA from the steps done so far."""

    def __init__(self, total: int | None, sink: Callable[[EvalProgress], None] | None) -> None:
        self.total = total
        self.sink = sink
        self.done = 0
        self.t0 = time.perf_counter()

    def report(self, track: str, model: str, phase: str, fraction: float = 0.0) -> None:
        if self.sink is None:
            return
        elapsed = time.perf_counter() - self.t0
        progress = self.done + min(max(fraction, 0.0), 1.0)
        eta = None
        if self.total and progress > 0:
            eta = elapsed / progress * max(self.total - progress, 0.0)
        self.sink(EvalProgress(self.done, self.total, track, model, phase, fraction,
                               elapsed, eta))

    def step(self, track: str, model: str) -> None:
        self.done += 1
        self.report(track, model, "done")


def _evaluate_track(engine: Engine, models: Sequence[str], track: Track, store: _Store,
                    window_s: float, clock: _Clock, result: dict[str, Any],
                    cancel: Any) -> dict[str, Any]:
    frames = int(track.mixture.shape[0])
    mix_hash = samples_digest([("mixture", track.mixture)], track.rate)
    entry: dict[str, Any] = {"name": track.name, "rate": track.rate, "frames": frames,
                             "seconds": round(frames / track.rate, 6),
                             "references": list(track.references),
                             "mixture_sha256": mix_hash, "results": {}}
    work = _MixtureFile(store.root / "work", track)
    try:
        for name in models:
            entry["results"][name] = _evaluate_one(engine, name, track, mix_hash, store,
                                                   window_s, clock, result, work, cancel)
            clock.step(track.name, name)
    finally:
        work.remove()
    return entry


class _MixtureFile:
    """The track's mixture as a float WAV for the engine, written on first use."""

    def __init__(self, folder: Path, track: Track) -> None:
        self.folder = folder
        self.track = track
        self.path: Path | None = None

    def get(self) -> Path:
        if self.path is None:
            import soundfile as sf

            self.folder.mkdir(parents=True, exist_ok=True)
            self.path = make_temp(self.folder, ".wav")
            sf.write(str(self.path), self.track.mixture, self.track.rate, subtype="FLOAT",
                     format="WAV")
        return self.path

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _evaluate_one(engine: Engine, name: str, track: Track, mix_hash: str, store: _Store,
                  window_s: float, clock: _Clock, result: dict[str, Any],
                  work: _MixtureFile, cancel: Any) -> dict[str, Any]:
    from engine.models.catalog import run_precision
    from engine.separator import check_request

    root = engine.config.resolved_models_dir()
    spec, plan, overlap = check_request(_request(name, Path("mixture.wav")), root)

    def estimate_key() -> str:
        return _sha("estimates-1", mix_hash, spec.name, spec.version,
                    weights_id(spec.name, root), plan.config_id(), f"{overlap:.6f}",
                    run_precision(spec, engine.precision), ENGINE_VERSION)

    key = estimate_key()
    result["models"].setdefault(name, {"version": spec.version, "stems": list(plan.names)})
    t0 = time.perf_counter()
    estimates = store.get_estimates(key, track.mixture.shape[0])
    cached = estimates is not None
    if estimates is None:
        clock.report(track.name, name, "separating")
        estimates = _separate(engine, name, work.get(), clock, track.name, cancel)
        key = estimate_key()  # loading may have written the weights manifest (spleeter)
        store.put_estimates(key, estimates)
    else:
        clock.report(track.name, name, "cached", 0.5)
    seconds = time.perf_counter() - t0
    ref_hash = samples_digest(track.references.items(), track.rate)
    score_key = _sha("scores-1", key, ref_hash, f"{window_s!r}",
                     museval_version())
    stems = store.get_scores(score_key)
    if stems is None:
        clock.report(track.name, name, "scoring", 0.9)
        stems = score(estimates, track, window_s)
        store.put_scores(score_key, stems)
    return {"cached": cached, "separate_seconds": None if cached else round(seconds, 3),
            "stems": stems}


def _separate(engine: Engine, name: str, path: Path, clock: _Clock, track: str,
              cancel: Any) -> dict[str, np.ndarray]:
    """Every stem of `name` for the mixture at `path`: (frames, channels) float32."""
    job = engine.prepare(_request(name, path))
    out = {n: np.zeros((job.channels, job.frames), np.float32) for n in job.stem_names}

    def progress(p: Any) -> None:
        frac = p.frames_done / p.frames_total if p.frames_total else 1.0
        clock.report(track, name, "separating", 0.8 * frac)

    for region in job.run(cancel=cancel, on_progress=progress):
        for stem, arr in region.stems.items():
            out[stem][:, region.start:region.end] = arr
    return {n: np.ascontiguousarray(a.T) for n, a in out.items()}


def score(estimates: dict[str, np.ndarray], track: Track, window_s: float = 1.0
          ) -> dict[str, dict[str, Any]]:
    """BSS Eval v4 of `estimates` against `track`'s references, set by set
    (`evaluation_sets`): stem -> {metric: median over frames, "frames": {metric: [...]}}."""
    out: dict[str, dict[str, Any]] = {}
    for group in evaluation_sets(estimates, track.references):
        refs = {est: np.sum([track.references[r] for r in sources], axis=0)
                for est, sources in group.items()}
        frames = bss_eval_frames(refs, {est: estimates[est] for est in group}, track.rate,
                                 window_s=window_s)
        for stem, per in frames.items():
            out[stem] = {m: median(per[m]) for m in METRICS}
            out[stem]["frames"] = per
    return out


def aggregate(tracks: list[dict[str, Any]], models: list[str]) -> dict[str, Any]:
    """model -> stem -> metric -> the median over tracks of the track figures (nan
    ignored), with "tracks": how many tracks scored the stem's SDR."""
    out: dict[str, Any] = {}
    for model in models:
        stems: dict[str, dict[str, list[float]]] = {}
        for entry in tracks:
            for stem, figures in entry["results"].get(model, {}).get("stems", {}).items():
                for m in METRICS:
                    stems.setdefault(stem, {k: [] for k in METRICS})[m].append(figures[m])
        out[model] = {stem: {**{m: median(v) for m, v in per.items()},
                             "tracks": sum(not math.isnan(x) for x in per["SDR"])}
                      for stem, per in stems.items()}
    return out
