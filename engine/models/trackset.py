"""The StemMixer's training tracks, read through `engine.evaluation.tracks` (MUSDB18
``.stem.mp4``, MUSDB18-HQ folders, any folder of ``<track>/mixture.wav`` +
``<stem>.wav``, or the built-in stempeg excerpt), with both members' estimates computed
once and cached on disk.

Every file is decoded with the engine's limits (size, length, channels, read time) by the
evaluation reader; the audio is brought to the members' rate and to stereo. A track's
references are its stems (``instrumental``, when asked for and absent, is the sum of its
non-vocal stems). Cache keys hash what was decoded: the sha256 of the decoded samples
(float32, with their shape and rate), never a file name or mtime.

Cache (`cache_dir`, never inside the data set): ``targets/<key>.npy`` and
``<member>/<version>/<weights>/<mixture sha256>-<rate>.npy``, each (stems, 2, samples)
float32, written atomically and memory-mapped when read, so a data set larger than memory
still trains (only one track is decoded at a time). An estimate is keyed by the decoded
mixture, the member's version and the sha256 of its weights manifest, so it is never
served for other audio or other weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidArgumentError
from engine.models.training import TrackData

if TYPE_CHECKING:
    import numpy as np
    import torch

    from engine.config import Limits
    from engine.evaluation.tracks import Track


def _at(x: np.ndarray, src_rate: int, rate: int) -> np.ndarray:
    """(frames, channels) at `src_rate` -> (2, samples) float32 at `rate`."""
    from engine import audio

    out = audio.to_model_channels(x.T, 2)
    return audio.resample(out, src_rate, rate) if src_rate != rate else out


def _cached(path: Path, make: Callable[[], np.ndarray], shape: tuple[int, ...] | None
            ) -> np.ndarray:
    """The array at `path` (memory-mapped), made and written atomically if absent or of
    another shape."""
    import numpy as np

    from protocol.files import make_temp, publish

    if path.is_file():
        try:
            arr = np.load(path, mmap_mode="r")
            if shape is None or arr.shape == shape:
                return np.asarray(arr) if arr.dtype != np.float32 else arr
        except (OSError, ValueError):
            pass  # damaged or foreign: made again below
    arr = np.ascontiguousarray(make(), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp(path.parent, ".npy")
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, arr)
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    out: np.ndarray = np.load(path, mmap_mode="r")
    return out


def targets(track: Track, stems: Sequence[str], rate: int, mix_digest: str,
            cache_dir: Path) -> np.ndarray:
    """The references (stems, 2, samples) of one decoded track at `rate` (cached by the
    sha256 of the decoded mixture and references)."""
    import numpy as np

    from engine.evaluation.tracks import samples_digest

    refs = track.references
    for s in stems:
        if s not in refs and not (s == "instrumental" and set(refs) - {"vocals"}):
            raise InvalidArgumentError(
                f"Track {track.name!r} has no {s} stem (it has {', '.join(refs) or 'none'}): "
                f"every training track needs {', '.join(stems)}.")
    key = hashlib.sha256("|".join([mix_digest, str(rate), *stems, samples_digest(
        sorted(refs.items()), track.rate)]).encode()).hexdigest()

    def make() -> np.ndarray:
        rows = []
        for s in stems:
            if s in refs:
                rows.append(_at(refs[s], track.rate, rate))
            else:  # instrumental: every non-vocal stem
                rest = np.asarray(np.sum([x for t, x in refs.items() if t != "vocals"],
                                         axis=0, dtype=np.float32))
                rows.append(_at(rest, track.rate, rate))
        return np.stack(rows)

    n = _resampled(track, rate)
    return _cached(cache_dir / "targets" / f"{key}.npy", make, (len(stems), 2, n))


def _resampled(track: Track, rate: int) -> int:
    from engine.audio.resampler import resampled_length

    frames = int(track.mixture.shape[0])
    return frames if track.rate == rate else resampled_length(frames, track.rate, rate)


def member_estimate(model: Any, maps: list[list[int]], mix: torch.Tensor) -> np.ndarray:
    """A member's whole-file output for `mix` (2, samples), as the engine runs it (with
    its input normalisation), mapped to the mixer's stems: (stems, 2, samples)."""
    import torch

    from engine.chunking import separate
    from engine.separator import _mono_mean_std

    inp, mean, std = mix, 0.0, 1.0
    if model.normalize_input:
        mean, std = _mono_mean_std(mix)
        if std >= 1e-8:
            inp = (mix - mean) / std
        else:
            mean, std = 0.0, 1.0
    with torch.no_grad():
        out = separate(model, inp) * std + mean
    return torch.stack([out[g].sum(0) for g in maps]).cpu().numpy()


def prepare(members: Sequence[str], data: str | Path, cache_dir: Path, models_root: Path,
            device: torch.device, limits: Limits, subset: str | None = "train",
            tracks: int | None = None,
            progress: Callable[[int, int, str], None] | None = None,
            ) -> tuple[tuple[str, ...], int, list[TrackData]]:
    """The mixer's stems, rate and one `TrackData` per track of the data set `data`
    (`engine.evaluation.tracks.find_tracks`: its `subset` folder when it has one, at most
    `tracks` tracks); estimates computed where not cached, members loaded only then."""
    import torch

    from engine.evaluation import tracks as data_sets
    from engine.models import catalog, ensemble, registry
    from engine.models.store import weights_id

    specs = [catalog.get_spec(m) for m in members]
    stems = ensemble.ensemble_stems([s.sources for s in specs])
    rate = specs[0].samplerate
    if any(s.samplerate != rate for s in specs):
        raise InvalidArgumentError("The two members run at different sample rates: choose "
                                   "models of one rate.")
    paths = data_sets.find_tracks(data, subset, tracks)
    if len(paths) < 2:  # before any member runs
        raise InvalidArgumentError(f"Training a mixer needs at least 2 tracks (one held out "
                                   f"for validation); the data set '{data}' gives "
                                   f"{len(paths)}.")
    builtin = str(data) == data_sets.BUILTIN
    loaded: dict[str, Any] = {}

    def member(name: str) -> Any:
        if name not in loaded:
            loaded[name] = registry.load(name, device, models_root)
        return loaded[name]

    weights = {}
    for spec in specs:  # a model without a manifest yet writes it when loaded (Spleeter)
        if not weights_id(spec.name, models_root):
            member(spec.name)
        weights[spec.name] = hashlib.sha256(
            weights_id(spec.name, models_root).encode()).hexdigest()[:16]
    out = []
    for i, path in enumerate(paths):
        if progress is not None:
            progress(i, len(paths), path.name)
        track = data_sets.load_track(path, limits, builtin=builtin)
        digest = data_sets.samples_digest([("mixture", track.mixture)], track.rate)
        ref = targets(track, stems, rate, digest, cache_dir)
        mix, name = _at(track.mixture, track.rate, rate), track.name
        del track  # only the memory-mapped arrays stay
        ests = []
        for spec in specs:
            def make(spec: Any = spec, mix: np.ndarray = mix) -> np.ndarray:
                m = member(spec.name)
                maps = ensemble.stem_map(m.spec.sources, stems)
                return member_estimate(m, maps, torch.from_numpy(mix))

            key = cache_dir / spec.name / spec.version / weights[spec.name]
            ests.append(_cached(key / f"{digest}-{rate}.npy", make, ref.shape))
        out.append(TrackData(name, ref, ests[0], ests[1]))
    if progress is not None:
        progress(len(paths), len(paths), "")
    return tuple(stems), rate, out

