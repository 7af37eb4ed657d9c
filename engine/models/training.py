"""Training a StemMixer (`engine.models.stemmixer`) on frozen members' estimates.

Inputs are `TrackData`: per track the reference stems and both members' estimates, each
(stems, channels, samples) float32 at the mixer's rate (numpy arrays or memory maps of
the cached estimates, `engine.models.trackset`). Tracks are split into training and
validation tracks (a seeded draw, at least one of each). Each epoch draws random crops of
`TrainSettings.segment` seconds from every training track (about one track length per
track), shuffled and batched; validation uses fixed, non-overlapping crops of the same
length.

Loss: L1 on the complex spectrogram (mean of |Re| + |Im| of Y − S over the crop's inner
frames, summed over stems), where Y is the mixed STFT and S the reference's: it is what
the mixer changes, per bin, and needs no inverse STFT in the loop. Optimiser: Adam (lr
1e-3), ReduceLROnPlateau on the validation loss (factor 0.5, `plateau_patience`), early
stopping after `patience` epochs without improvement; the best epoch's weights are kept.
Deterministic under a seed: one numpy generator draws the split and the crops, torch is
seeded before the networks are built, and torch.use_deterministic_algorithms is on while
training (CPU kernels are deterministic; on CUDA set CUBLAS_WORKSPACE_CONFIG=:4096:8).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidArgumentError
from engine.models import stemmixer as sm

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass
class TrackData:
    """One training track: `targets`, `est_a`, `est_b` each (stems, channels, samples)."""

    name: str
    targets: Any
    est_a: Any
    est_b: Any

    @property
    def samples(self) -> int:
        return int(self.targets.shape[-1])


@dataclass(frozen=True)
class TrainSettings:
    """Epochs, crop length (s), batch size (crops), Adam's learning rate, seed, early
    stopping and plateau patience (epochs), validation fraction of the tracks, device."""

    epochs: int = 100
    segment: float = 7.0
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 0
    patience: int = 10
    plateau_patience: int = 5
    val_fraction: float = 0.2
    device: str = "cpu"


@dataclass
class Progress:
    """After each epoch: epoch (1-based) of epochs, losses, learning rate, seconds."""

    epoch: int
    epochs: int
    train_loss: float
    val_loss: float
    lr: float
    elapsed: float


@dataclass
class TrainResult:
    """The best networks (eval mode, CPU), the loss history, and the split."""

    nets: Any
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    train_tracks: list[str] = field(default_factory=list)
    val_tracks: list[str] = field(default_factory=list)
    seconds: float = 0.0


def split(names: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of training and validation tracks: a seeded draw of
    max(1, round(fraction · n)) validation tracks (n >= 2 needed)."""
    import numpy as np

    n = len(names)
    if n < 2:
        raise InvalidArgumentError(f"Training a mixer needs at least 2 tracks (one held out "
                                   f"for validation), not {n}.")
    k = min(n - 1, max(1, round(fraction * n)))
    order = np.random.default_rng(seed).permutation(n)
    val = sorted(int(i) for i in order[:k])
    return [i for i in range(n) if i not in val], val


def _crop(track: TrackData, start: int, length: int) -> np.ndarray:
    """(3, stems, channels, length): target, A, B."""
    import numpy as np

    return np.stack([np.asarray(x[..., start:start + length], dtype=np.float32)
                     for x in (track.targets, track.est_a, track.est_b)])


def _val_crops(tracks: Sequence[TrackData], length: int) -> Iterator[np.ndarray]:
    for t in tracks:
        for s in range(0, max(1, t.samples - length + 1), length):
            yield _crop(t, s, min(length, t.samples))


def _train_crops(tracks: Sequence[TrackData], length: int,
                 rng: np.random.Generator) -> list[tuple[int, int]]:
    picks = []
    for i, t in enumerate(tracks):
        count = max(1, round(t.samples / length))
        hi = max(0, t.samples - length)
        picks += [(i, int(rng.integers(0, hi + 1))) for _ in range(count)]
    order = rng.permutation(len(picks))
    return [picks[j] for j in order]


def batch_loss(nets: torch.nn.ModuleDict, config: sm.MixerConfig,
               crops: torch.Tensor) -> torch.Tensor:
    """The mean L1 spectrogram loss of crops (batch, 3, stems, channels, samples), summed
    over stems."""
    c = config.half_context
    spec = sm.stft(config, crops)  # (batch, 3, stems, ch, F, K)
    total = crops.new_zeros(())
    for j, stem in enumerate(config.stems):
        s, a, b = spec[:, 0, j], spec[:, 1, j], spec[:, 2, j]
        inner = slice(c, spec.shape[-1] - c)
        al = sm.alpha(nets[stem], config, a, b)
        err = a[..., inner] + sm.blend(config, a[..., inner], b[..., inner], al) - s[..., inner]
        total = total + (err.real.abs() + err.imag.abs()).mean()
    return total


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def _check(config: sm.MixerConfig, tracks: Sequence[TrackData], length: int) -> None:
    need = config.n_fft + 2 * config.half_context * config.hop + config.hop
    for t in tracks:
        shapes = {tuple(x.shape) for x in (t.targets, t.est_a, t.est_b)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3 or \
                next(iter(shapes))[0] != len(config.stems):
            raise InvalidArgumentError(f"Track {t.name!r}: references and both estimates "
                                       f"must be (stems={len(config.stems)}, channels, "
                                       f"samples) alike, got {sorted(shapes)}.")
        if t.samples < need:
            raise InvalidArgumentError(f"Track {t.name!r} is too short to train on: it needs "
                                       f"at least {need} samples.")
    if length < need:
        raise InvalidArgumentError(f"The training segment must hold at least {need} samples "
                                   f"({need / config.samplerate:.2f} s).")


def train(config: sm.MixerConfig, tracks: Sequence[TrackData], settings: TrainSettings,
          progress: Callable[[Progress], None] | None = None) -> TrainResult:
    """Train one mixer per stem on `tracks`; returns the best epoch's networks."""
    import numpy as np
    import torch

    length = int(settings.segment * config.samplerate)
    length = min(length, min(t.samples for t in tracks)) if tracks else length
    _check(config, tracks, length)
    tr_idx, va_idx = split([t.name for t in tracks], settings.val_fraction, settings.seed)
    train_set = [tracks[i] for i in tr_idx]
    val_set = [tracks[i] for i in va_idx]
    rng = np.random.default_rng(settings.seed)
    device = torch.device(settings.device)
    t0 = time.perf_counter()
    with _deterministic():
        torch.manual_seed(settings.seed)
        nets = sm.build(config).to(device)
        opt = torch.optim.Adam(nets.parameters(), lr=settings.lr)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=0.5, patience=settings.plateau_patience)
        best, best_state, best_epoch, stale = math.inf, None, 0, 0
        history: list[dict[str, float]] = []
        for epoch in range(1, settings.epochs + 1):
            nets.train()
            picks = _train_crops(train_set, length, rng)
            losses = []
            for k in range(0, len(picks), settings.batch_size):
                crops = np.stack([_crop(train_set[i], s, length)
                                  for i, s in picks[k:k + settings.batch_size]])
                loss = batch_loss(nets, config, torch.from_numpy(crops).to(device))
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
            val = validation_loss(nets, config, val_set, length, device)
            sched.step(val)
            lr = float(opt.param_groups[0]["lr"])
            history.append({"epoch": epoch, "train_loss": float(np.mean(losses or [math.nan])),
                            "val_loss": val, "lr": lr})
            if val < best:
                best, best_epoch, stale = val, epoch, 0
                best_state = copy.deepcopy(nets.state_dict())
            else:
                stale += 1
            if progress is not None:
                progress(Progress(epoch, settings.epochs, history[-1]["train_loss"], val, lr,
                                  time.perf_counter() - t0))
            if stale >= settings.patience:
                break
    assert best_state is not None
    nets.load_state_dict(best_state)
    nets = nets.cpu().eval()
    return TrainResult(nets, best_epoch, best, history, [t.name for t in train_set],
                       [t.name for t in val_set], time.perf_counter() - t0)


def validation_loss(nets: torch.nn.ModuleDict, config: sm.MixerConfig,
                    tracks: Sequence[TrackData], length: int, device: torch.device) -> float:
    """Mean loss over the fixed validation crops (eval mode, no gradients)."""
    import torch

    nets.eval()
    vals = []
    with torch.no_grad():
        for crop in _val_crops(tracks, length):
            vals.append(float(batch_loss(nets, config, torch.from_numpy(crop)[None].to(device))))
    return sum(vals) / max(1, len(vals))


def sdr_global(reference: np.ndarray, estimate: np.ndarray) -> float:
    """10·log10(Σ s² / Σ (s − ŝ)²) in dB over a whole (channels, samples) stem: a quick
    signal-to-error figure, not BSS Eval's SDR."""
    import numpy as np

    num = float(np.sum(np.square(reference, dtype=np.float64)))
    den = float(np.sum(np.square(reference.astype(np.float64) - estimate)))
    return 10.0 * math.log10((num + 1e-12) / (den + 1e-12))


def validation_figures(result: TrainResult, config: sm.MixerConfig,
                       tracks: Sequence[TrackData]) -> dict[str, Any]:
    """Per stem, the median over the validation tracks of an SDR for the mixer and for
    each member alone (dB; None where no frame could be scored), plus the best validation
    loss and epoch.

    With museval installed (the 'eval' extra): BSS Eval v4 SDR
    (`engine.evaluation.bss_eval`, the stems evaluated jointly, median over 1 s frames, or
    over one frame as long as the shortest validation track when it is shorter), under the
    key ``sdr_bss_eval_v4``. Without it: `sdr_global`, a plain signal-to-error ratio, under
    the key ``sdr_global``. ``figure`` says which in words."""
    import numpy as np
    import torch

    from engine.errors import PackageMissingError
    from engine.evaluation import metrics

    try:
        metrics.museval_module()
        bss = True
    except PackageMissingError:
        bss = False
    by_name = {t.name: t for t in tracks}
    val = [by_name[name] for name in result.val_tracks]
    window_s = min([1.0, *(t.samples / config.samplerate for t in val)])
    rows: dict[str, dict[str, list[float]]] = {s: {"mixer": [], "member_a": [],
                                                   "member_b": []} for s in config.stems}
    for t in val:
        a, b = (np.asarray(x, dtype=np.float32) for x in (t.est_a, t.est_b))
        mixed = sm.mix_track(result.nets, config, torch.from_numpy(a),
                             torch.from_numpy(b)).numpy()
        refs = np.asarray(t.targets, dtype=np.float32)
        for key, est in (("mixer", mixed), ("member_a", a), ("member_b", b)):
            if bss:
                figs = metrics.bss_eval(
                    {s: refs[j].T for j, s in enumerate(config.stems)},
                    {s: est[j].T for j, s in enumerate(config.stems)},
                    config.samplerate, window_s=window_s)
                for stem in config.stems:
                    rows[stem][key].append(figs[stem]["SDR"])
            else:
                for j, stem in enumerate(config.stems):
                    rows[stem][key].append(sdr_global(refs[j], est[j]))
    table = {s: {k: _number(metrics.median(v)) for k, v in r.items()} for s, r in rows.items()}
    out: dict[str, Any] = {"best_val_loss": result.best_val_loss,
                           "best_epoch": result.best_epoch}
    if bss:
        out["figure"] = (f"median over validation tracks of BSS Eval v4 SDR (museval "
                         f"{metrics.museval_version()}, stems evaluated jointly, median over "
                         f"{window_s:g} s frames), dB")
        out["window_s"] = window_s
        out["sdr_bss_eval_v4"] = table
    else:
        out["figure"] = ("median over validation tracks of 10 log10(sum s^2 / sum (s - est)^2)"
                         ", dB (not BSS Eval: museval is not installed)")
        out["sdr_global"] = table
    return out


def sdr_table(figures: dict[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
    """The SDR table of `validation_figures`' output and its key."""
    key = "sdr_bss_eval_v4" if "sdr_bss_eval_v4" in figures else "sdr_global"
    return key, figures[key]


def _number(v: float) -> float | str | None:
    """A JSON-safe figure: None for nan, "inf" for +inf (a perfect estimate)."""
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v
