"""Fixed ensembles across families: several models' stems combined into one result.

An ensemble is named ``A+B[+C...]`` (each a catalogue model), optionally followed by
``@algorithm`` (``A+B@median_wave``), or by a named entry in `ENSEMBLES` (which may also
carry per-stem weights). Algorithms, per output stem, over the members' waveforms
``x_m`` (channels, samples) with weights ``w_m``:

- ``avg_wave``: ``sum(w_m x_m) / sum(w_m)``;
- ``median_wave``: the per-sample median (numpy's: mean of the two middle values for an
  even count; weights unused);
- ``min_spec`` / ``max_spec``: per STFT bin, the member with the smallest / largest
  magnitude wins and gives its complex value (magnitude and phase); weights unused;
- ``avg_fft``: the weighted mean of the members' complex spectra.

The spectral algorithms use frames of `N_FFT` samples every `HOP` on a grid fixed to
the track (frame k covers ``[k·HOP − N_FFT/2, k·HOP + N_FFT/2)``, zeros outside the
track), a periodic Hann window for analysis and synthesis, and overlap-add normalised
by the summed squared window, so every output sample depends only on member audio within
`MARGIN` samples of it.

Stem names are normalised across members (``Vocals``/``vocal`` -> ``vocals``,
``no_vocals``/``accompaniment`` -> ``instrumental``). When the members' stems differ the
ensemble gives the four stems if every member has them (extra stems such as guitar fold
into other), else vocals + instrumental, where a member's instrumental is its own or the
sum of its non-vocal stems.

Streaming: each member runs through the chunk loop (`engine.chunking.iter_separate`)
with its own windows, weights and layout, on the same mix, the same cursor order and the
same already-final ranges; the ensemble keeps each member's finished samples and emits a
range as soon as it is final in every member (for the spectral algorithms: final in every
member within `MARGIN` of it). Member outputs are therefore exactly their whole-file
outputs and the ensemble's streamed result equals its whole-file result. Memory: one
(stems, channels, samples) float32 buffer per member for the job.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidArgumentError, ModelError
from engine.models.base import ModelSpec
from protocol.errors import ErrorCode
from protocol.stems import FOUR, TWO

if TYPE_CHECKING:
    import numpy as np
    import torch

    from engine.chunking import CancelToken, ChunkProgress, ChunkStats, FinalRegion
    from engine.models.base import SeparationModel

ALGORITHMS = ("avg_wave", "median_wave", "min_spec", "max_spec", "avg_fft")
SPECTRAL = ("min_spec", "max_spec", "avg_fft")
#: Spectral frames: length and hop in samples (at the model rate).
N_FFT = 2048
HOP = 512
#: How far (samples) a spectral output sample reaches into the member audio.
MARGIN = N_FFT + HOP

_ALIASES = {"vocal": "vocals", "voice": "vocals", "vox": "vocals", "no_vocals": "instrumental",
            "novocals": "instrumental", "accompaniment": "instrumental", "inst": "instrumental",
            "instrument": "instrumental", "karaoke": "instrumental"}


@dataclass(frozen=True)
class EnsembleEntry:
    """A named ensemble: members, algorithm, and optional per-stem weights (stem -> one
    weight per member; stems not named weigh every member 1)."""

    members: tuple[str, ...]
    algorithm: str = "avg_wave"
    weights: tuple[tuple[str, tuple[float, ...]], ...] = ()
    description: str = ""


#: Named ensembles of the catalogue's models.
ENSEMBLES: dict[str, EnsembleEntry] = {
    "ensemble-vocals": EnsembleEntry(
        ("mel-roformer-kim-vocals", "bs-roformer-viperx-1297", "mdx-voc-ft"), "avg_wave",
        (("vocals", (2.0, 1.0, 1.0)), ("instrumental", (2.0, 1.0, 1.0))),
        "Mel-RoFormer Kim + BS-RoFormer viperx + MDX Voc FT, weighted wave average."),
    "ensemble-4stems": EnsembleEntry(
        ("htdemucs_ft", "htdemucs"), "avg_wave", (),
        "htdemucs_ft + htdemucs, wave average of the four stems."),
}


def normalise_stem(name: str) -> str:
    """The protocol's name for a model's stem name (``"Vocals"`` -> ``"vocals"``)."""
    low = name.strip().lower().replace("-", "_").replace(" ", "_")
    return _ALIASES.get(low, low)


def is_ensemble(name: str) -> bool:
    """Whether `name` is a fixed ensemble (``A+B``, a named one) or a trained StemMixer
    (``ensemble:NAME``, `engine.models.stemmixer`)."""
    return "+" in name or name.split("@")[0] in ENSEMBLES or name.startswith("ensemble:")


def parse(name: str) -> EnsembleEntry:
    """The members, algorithm and weights that `name` means (InvalidArgumentError or
    MODEL_UNKNOWN when it names no ensemble)."""
    base, _, algo = name.partition("@")
    entry = ENSEMBLES.get(base) or EnsembleEntry(tuple(m.strip() for m in base.split("+")))
    if algo:
        entry = EnsembleEntry(entry.members, algo, entry.weights, entry.description)
    if entry.algorithm not in ALGORITHMS:
        raise InvalidArgumentError(f"Unknown ensemble algorithm {entry.algorithm!r} in "
                                   f"{name!r}: use one of {', '.join(ALGORITHMS)}.")
    if len(entry.members) < 2 or any(not m for m in entry.members):
        raise InvalidArgumentError(f"An ensemble names two or more models joined by '+', "
                                   f"e.g. 'htdemucs+mdx-voc-ft', not {name!r}.")
    for stem, w in entry.weights:
        if len(w) != len(entry.members) or min(w) < 0 or sum(w) <= 0:
            raise InvalidArgumentError(f"The weights of {stem!r} in {name!r} need one "
                                       "non-negative value per member, not all zero.")
    return entry


def ensemble_stems(member_sources: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """The ensemble's stems from its members' (normalised) stems."""
    sets = [{normalise_stem(s) for s in src} for src in member_sources]
    if all(s == sets[0] for s in sets):
        return tuple(normalise_stem(s) for s in member_sources[0])
    if all(set(FOUR) <= s for s in sets):
        return FOUR
    if all("vocals" in s for s in sets):
        return TWO
    raise ModelError("These models share no stems to combine: an ensemble needs every "
                     "member to give vocals, or every member the four stems.",
                     code=ErrorCode.STEMS_UNSUPPORTED)


def stem_map(sources: Sequence[str], stems: Sequence[str]) -> list[list[int]]:
    """For each ensemble stem, the indices of a member's sources summed into it."""
    norm = [normalise_stem(s) for s in sources]
    out: list[list[int]] = []
    for stem in stems:
        if stem in norm:
            idx = [norm.index(stem)]
            if stem == "other" and tuple(stems) == FOUR:
                idx += [i for i, s in enumerate(norm) if s not in FOUR]
        elif stem == "instrumental":
            idx = [i for i, s in enumerate(norm) if s != "vocals"]
        else:  # pragma: no cover - ensemble_stems only names stems every member gives
            raise ModelError(f"internal: no source for {stem}")
        out.append(idx)
    return out


def spec_for(name: str) -> ModelSpec:
    """The `ModelSpec` of ensemble `name`: its version covers every member's name and
    version, the algorithm and the weights (so the results cache tells ensembles apart)."""
    from engine.models import catalog

    if name.startswith("ensemble:"):
        from engine.models import stemmixer

        return stemmixer.spec_for(name)
    entry = parse(name)
    members = [catalog.get_spec(m) for m in entry.members]
    rates = {s.samplerate for s in members}
    if len(rates) > 1:
        raise InvalidArgumentError(f"The members of {name!r} run at different sample rates "
                                   f"({sorted(rates)} Hz); choose models of one rate.")
    stems = ensemble_stems([s.sources for s in members])
    ident = "|".join(f"{s.name}={s.version}" for s in members)
    ident += f"|{entry.algorithm}|{entry.weights!r}"
    if entry.algorithm in SPECTRAL:
        ident += f"|{N_FFT}/{HOP}"
    return ModelSpec(
        name=name, version=hashlib.sha256(ident.encode()).hexdigest()[:16],
        family="ensemble", sources=stems, samplerate=members[0].samplerate,
        segment_seconds=max(s.segment_seconds for s in members),
        default_overlap=0.25,
        description=entry.description or f"Ensemble ({entry.algorithm}) of "
                                         f"{', '.join(entry.members)}.",
        size_mb=sum(s.size_mb for s in members),
        extra={"members": entry.members, "algorithm": entry.algorithm,
               "bytes_per_window": max(s.window_bytes for s in members)})


def _weights(entry: EnsembleEntry, stems: Sequence[str]) -> list[list[float]]:
    table = dict(entry.weights)
    return [list(table.get(s, (1.0,) * len(entry.members))) for s in stems]


class EnsembleModel:
    """Members run through the chunk loop; regions combined once final in every member.

    `iter_regions` replaces the chunk loop for this model (`engine.chunking.iter_separate`
    hands over to it); `forward` is not used."""

    align = "center"
    normalize_input = False

    def __init__(self, spec: ModelSpec, members: Sequence[SeparationModel],
                 entry: EnsembleEntry) -> None:
        self.spec = spec
        self.members = list(members)
        self.algorithm = entry.algorithm
        self.weights = _weights(entry, spec.sources)
        self.maps = [stem_map(m.spec.sources, spec.sources) for m in self.members]
        self.segment_length = max(m.segment_length for m in self.members)
        self.nets = [n for m in self.members for n in _nets(m)]
        #: How far (samples) an output sample reaches into the member audio.
        self.margin = MARGIN if self.algorithm in SPECTRAL else 0

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    def to(self, device: torch.device) -> EnsembleModel:
        for m in self.members:
            m.to(device)
        return self

    def valid_length(self, length: int) -> int:
        return length

    def forward(self, mix: torch.Tensor, length: int | None = None) -> torch.Tensor:
        raise NotImplementedError("an ensemble runs through iter_regions")

    def iter_regions(
        self, mix: torch.Tensor, *, overlap: float = 0.25, batch_size: int = 1,
        first_batch: int = 1, start_at: int | None = None,
        autocast: Callable[[], contextlib.AbstractContextManager[object]] | None = None,
        cancel: CancelToken | None = None,
        progress: Callable[[ChunkProgress], None] | None = None,
        stats: ChunkStats | None = None, transition_power: float = 1.0,
        already_final: Sequence[tuple[int, int]] = (),
    ) -> Iterator[FinalRegion]:
        """Same contract as `engine.chunking.iter_separate`: (ensemble stems, channels,
        n) regions covering ``[0, samples)`` minus `already_final`, each once."""
        import numpy as np
        import torch

        from engine.chunking import ChunkProgress, ChunkStats, iter_separate

        total = mix.shape[-1]
        n_stems, channels = len(self.spec.sources), mix.shape[0]
        bufs = [torch.zeros(n_stems, channels, total) for _ in self.members]
        final = np.zeros((len(self.members), total), bool)
        done = np.zeros(total, bool)
        for a, b in already_final:
            done[max(0, a):min(total, b)] = True
        member_stats = [ChunkStats() for _ in self.members]
        latest: dict[int, ChunkProgress] = {}
        t0 = time.perf_counter()
        margin = self.margin
        # A spectral output sample needs member audio within `margin`: members recompute
        # that much inside each range finished earlier (not at the track's ends).
        member_done = [(a if a <= 0 else a + margin, b if b >= total else b - margin)
                       for a, b in already_final]
        member_done = [(a, b) for a, b in member_done if b > a]

        def on_progress(k: int, p: ChunkProgress) -> None:
            latest[k] = p
            if progress is not None and len(latest) == len(self.members):
                ps = list(latest.values())
                progress(ChunkProgress(
                    sum(q.windows_done for q in ps), sum(q.windows_total for q in ps),
                    int(done.sum()), total, max(q.elapsed for q in ps), None))

        iters: list[Iterator[FinalRegion] | None] = []
        for k, m in enumerate(self.members):
            inp, undo = mix, (0.0, 1.0)
            if m.normalize_input:
                from engine.separator import _mono_mean_std

                mean, std = _mono_mean_std(mix)
                if std >= 1e-8:
                    inp, undo = (mix - mean) / std, (mean, std)
            iters.append(_undo(iter_separate(
                m, inp, overlap=overlap, batch_size=batch_size, first_batch=first_batch,
                start_at=start_at, autocast=autocast, cancel=cancel,
                progress=functools.partial(on_progress, k), stats=member_stats[k],
                transition_power=transition_power, already_final=member_done), undo))
        while any(it is not None for it in iters):
            for k, it in enumerate(iters):
                if it is None:
                    continue
                fr = next(it, None)
                if fr is None:
                    iters[k] = None
                    continue
                src = fr.audio
                bufs[k][..., fr.start:fr.end] = torch.stack(
                    [src[g].sum(0) for g in self.maps[k]])
                final[k, fr.start:fr.end] = True
                for a, b in _ready(final, done, fr.start, fr.end, margin):
                    done[a:b] = True
                    region = self._combine(bufs, a, b, total)
                    if stats is not None and stats.first_region_seconds is None:
                        stats.first_region_seconds = time.perf_counter() - t0
                    yield region
        if stats is not None:
            stats.forward_seconds += sum(s.forward_seconds for s in member_stats)
            stats.batches += sum(s.batches for s in member_stats)

    def _combine(self, bufs: list[torch.Tensor], a: int, b: int, total: int) -> FinalRegion:
        import torch

        from engine.chunking import FinalRegion

        out = []
        for j in range(len(self.spec.sources)):
            w = torch.tensor(self.weights[j])
            if self.algorithm in SPECTRAL:
                out.append(spectral(self.algorithm, [x[j] for x in bufs], w, a, b, total))
                continue
            xs = torch.stack([x[j, :, a:b] for x in bufs])  # (members, channels, n)
            if self.algorithm == "avg_wave":
                out.append((xs * w[:, None, None]).sum(0) / w.sum())
            else:  # median_wave, numpy's definition
                srt = xs.sort(0).values
                n = srt.shape[0]
                out.append(0.5 * (srt[(n - 1) // 2] + srt[n // 2]))
        return FinalRegion(a, b, torch.stack(out))


def _undo(it: Iterator[FinalRegion], undo: tuple[float, float]) -> Iterator[FinalRegion]:
    mean, std = undo
    for fr in it:
        if std != 1.0 or mean != 0.0:
            fr.audio = fr.audio * std + mean
        yield fr


def _nets(model: Any) -> list[Any]:
    nets = getattr(model, "models", None) or getattr(model, "nets", None) or []
    if isinstance(nets, dict):
        return list(nets.values())
    return list(nets) if isinstance(nets, (list, tuple)) else [nets]


def _ready(final: np.ndarray, done: np.ndarray, start: int, end: int,
           margin: int) -> list[tuple[int, int]]:
    """Runs ``[a, b)`` near ``[start, end)`` that are final in every member (within
    `margin` of each sample; outside the track counts as final) and not yet emitted."""
    import numpy as np

    total = final.shape[1]
    lo, hi = max(0, start - 2 * margin), min(total, end + 2 * margin)
    ok: np.ndarray = np.asarray(final[:, lo:hi].all(0))
    if margin:
        pad = np.concatenate([[lo == 0] * margin, ok, [hi == total] * margin])
        bad = np.concatenate([[0], np.cumsum(~pad)])
        width = 2 * margin + 1
        ok = (bad[width:] - bad[:-width]) == 0
    c0, c1 = max(lo, start - margin) - lo, min(hi, end + margin) - lo
    cand = ok[c0:c1] & ~done[lo + c0:lo + c1]
    edges = np.flatnonzero(np.diff(np.concatenate([[0], cand.astype(np.int8), [0]])))
    return [(lo + c0 + int(a), lo + c0 + int(b)) for a, b in zip(edges[::2], edges[1::2],
                                                                  strict=True)]


def spectral(algorithm: str, xs: Sequence[torch.Tensor], w: torch.Tensor, a: int, b: int,
             total: int) -> torch.Tensor:
    """Samples ``[a, b)`` of the spectral combination of the members' whole-track
    waveforms `xs` (each (channels, total)): the frames that touch ``[a, b)``, combined
    per bin, overlap-added and normalised by the summed squared window."""
    import torch

    half = N_FFT // 2
    k_lo = (a + half - N_FFT) // HOP + 1  # first frame with start + N_FFT > a
    k_hi = (b + half - 1) // HOP  # last frame with start < b
    s0 = k_lo * HOP - half
    s1 = k_hi * HOP - half + N_FFT
    seg = torch.stack([x[..., max(0, s0):min(total, s1)] for x in xs])
    seg = torch.nn.functional.pad(seg, (max(0, -s0), max(0, s1 - total)))
    win = torch.hann_window(N_FFT, periodic=True)
    frames = seg.unfold(-1, N_FFT, HOP) * win  # (members, ch, K, n_fft)
    spec = torch.fft.rfft(frames, dim=-1)
    if algorithm == "avg_fft":
        comb = (spec * w[:, None, None, None]).sum(0) / w.sum()
    else:
        mag = spec.abs()
        pick = mag.argmin(0) if algorithm == "min_spec" else mag.argmax(0)
        comb = torch.take_along_dim(spec, pick[None], 0)[0]
    back = torch.fft.irfft(comb, n=N_FFT, dim=-1) * win  # (ch, K, n_fft)
    out = overlap_add(back)
    norm = overlap_add((win**2).expand(back.shape[-2], N_FFT)[None])[0]
    res = out / norm
    return res[..., a - s0:b - s0]


def overlap_add(frames: torch.Tensor, n_fft: int = N_FFT, hop: int = HOP) -> torch.Tensor:
    """(..., K, n_fft) frames `hop` apart (n_fft a multiple of hop) -> (...,
    (K - 1)·hop + n_fft) summed."""
    import torch

    q = n_fft // hop
    k = frames.shape[-2]
    parts = frames.reshape(*frames.shape[:-1], q, hop)
    out = torch.zeros(*frames.shape[:-2], k + q - 1, hop, dtype=frames.dtype,
                      device=frames.device)
    for i in range(q):
        out[..., i:i + k, :] += parts[..., i, :]
    return out.reshape(*frames.shape[:-2], (k + q - 1) * hop)


def load(name: str, device: torch.device, models_root: Path) -> EnsembleModel:
    """Load every member of ensemble `name` onto `device`."""
    from engine.models import registry

    if name.startswith("ensemble:"):
        from engine.models import stemmixer

        return stemmixer.load(name, device, models_root)
    spec = spec_for(name)
    entry = parse(name)
    members = [registry.load(m, device, models_root) for m in entry.members]
    return EnsembleModel(spec, members, entry)
