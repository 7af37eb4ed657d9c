"""The StemMixer's training tracks: a folder of ``<track>/mixture.wav`` + ``<stem>.wav``
(the MUSDB18-HQ layout), read once, with both members' estimates computed once and
cached on disk.

Every file is opened once (`engine.audio.SourceFile`: bounded in bytes and hashing time)
and decoded with the engine's limits; what was hashed is what was decoded. Audio is
brought to the members' rate and to stereo. A track's references are its stem files
(``instrumental``, when asked for and absent, is the sum of its non-vocal stem files).

Cache (`cache_dir`, never inside the tracks' folder): ``targets/<key>.npy`` and
``<member>/<version>/<mixture sha256>-<rate>.npy``, each (stems, 2, samples) float32,
written atomically and memory-mapped when read, so a data set larger than memory still
trains. An estimate is keyed by the mixture's bytes and the member's version, so it is
never served for other audio or another model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import InputError, InvalidArgumentError
from engine.models.training import TrackData
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    import numpy as np
    import torch

    from engine.config import Limits

MIXTURE = "mixture.wav"
#: The stem files a MUSDB18-HQ track has besides the mixture.
MUSDB_STEMS = ("vocals", "drums", "bass", "other")


def list_tracks(root: Path) -> list[Path]:
    """The track folders under `root` (those holding ``mixture.wav``), sorted by name.
    Note for the merge with `stembridge eval`: its track reader can replace this one."""
    if not root.is_dir():
        raise InputError(f"The training data folder {root} does not exist.",
                         code=ErrorCode.INPUT_MISSING)
    tracks = sorted(p for p in root.iterdir() if (p / MIXTURE).is_file())
    if not tracks:
        raise InvalidArgumentError(f"{root} holds no track folders: each track is a folder "
                                   f"with {MIXTURE} and one <stem>.wav per stem (the "
                                   "MUSDB18-HQ layout).")
    return tracks


def read_audio(path: Path, rate: int, limits: Limits) -> tuple[np.ndarray, str]:
    """(2, samples) float32 at `rate` Hz and the sha256 of the bytes decoded."""
    from engine import audio
    from engine.audio.source import SourceFile

    with SourceFile(path, limits.max_source_bytes) as src:
        digest = src.sha256(limits.read_timeout)
        decoded, _ = audio.load(path, limits)
        src.check_unchanged()
    x = audio.to_model_channels(decoded.samples, 2)
    if decoded.samplerate != rate:
        x = audio.resample(x, decoded.samplerate, rate)
    return x, digest


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


def targets(folder: Path, stems: Sequence[str], rate: int, limits: Limits,
            mixture: tuple[np.ndarray, str], cache_dir: Path) -> np.ndarray:
    """The references (stems, 2, samples) of one track (cached by the files' sha256)."""
    import numpy as np

    files = {s: folder / f"{s}.wav" for s in MUSDB_STEMS if (folder / f"{s}.wav").is_file()}
    files.update({s: folder / f"{s}.wav" for s in stems if (folder / f"{s}.wav").is_file()})
    for s in stems:
        if s not in files and not (s == "instrumental" and set(files) - {"vocals"}):
            raise InvalidArgumentError(f"Track {folder.name!r} has no {s}.wav: each track "
                                       f"folder needs {MIXTURE} and "
                                       f"{', '.join(f'{t}.wav' for t in stems)}.")
    read = {s: read_audio(p, rate, limits) for s, p in sorted(files.items())}
    n = min([mixture[0].shape[-1], *(x.shape[-1] for x, _ in read.values())])
    key = hashlib.sha256("|".join([mixture[1], str(rate), *stems, *(
        f"{s}={d}" for s, (_, d) in sorted(read.items()))]).encode()).hexdigest()

    def make() -> np.ndarray:
        rows = []
        for s in stems:
            if s in read:
                rows.append(read[s][0][..., :n])
            else:  # instrumental: every non-vocal stem file
                rows.append(np.sum([x[..., :n] for t, (x, _) in read.items()
                                    if t != "vocals"], axis=0))
        return np.stack(rows)

    return _cached(cache_dir / "targets" / f"{key}.npy", make, (len(stems), 2, n))


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


def prepare(members: Sequence[str], root: Path, cache_dir: Path, models_root: Path,
            device: torch.device, limits: Limits,
            progress: Callable[[int, int, str], None] | None = None,
            ) -> tuple[tuple[str, ...], int, list[TrackData]]:
    """The mixer's stems, rate and one `TrackData` per track of `root` (estimates
    computed where not cached; members loaded only then)."""
    import torch

    from engine.models import catalog, ensemble, registry

    specs = [catalog.get_spec(m) for m in members]
    stems = ensemble.ensemble_stems([s.sources for s in specs])
    rate = specs[0].samplerate
    if any(s.samplerate != rate for s in specs):
        raise InvalidArgumentError("The two members run at different sample rates: choose "
                                   "models of one rate.")
    loaded: dict[str, Any] = {}
    out = []
    folders = list_tracks(root)
    for i, folder in enumerate(folders):
        if progress is not None:
            progress(i, len(folders), folder.name)
        mix, digest = read_audio(folder / MIXTURE, rate, limits)
        ref = targets(folder, stems, rate, limits, (mix, digest), cache_dir)
        n = ref.shape[-1]
        ests = []
        for spec in specs:
            def make(spec: Any = spec, mix: np.ndarray = mix, n: int = n) -> np.ndarray:
                if spec.name not in loaded:
                    loaded[spec.name] = registry.load(spec.name, device, models_root)
                m = loaded[spec.name]
                maps = ensemble.stem_map(m.spec.sources, stems)
                return member_estimate(m, maps, torch.from_numpy(mix[..., :n].copy()))

            path = cache_dir / spec.name / spec.version / f"{digest}-{rate}.npy"
            ests.append(_cached(path, make, (len(stems), 2, n)))
        out.append(TrackData(folder.name, ref, ests[0], ests[1]))
    if progress is not None:
        progress(len(folders), len(folders), "")
    return tuple(stems), rate, out
