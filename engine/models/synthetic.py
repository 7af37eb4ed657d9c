"""Synthetic multitrack songs and two synthetic separators with complementary errors, for
the StemMixer's controlled experiment (tests, `bench/bench_stemmixer.py`). Nothing in the
library imports this module.

A song is four stems (`STEMS`), each (2 channels, samples) float32 at `rate` Hz, every
song drawn from its own seed:

- ``vocals``: a harmonic voice: notes of 150-400 Hz with vibrato, 12 decaying harmonics,
  syllable envelopes;
- ``drums``: kicks (pitch-dropping sines), snares (band-passed noise bursts) and hats
  (high-passed noise clicks) on a random tempo;
- ``bass``: low notes (40-110 Hz) of 4 harmonics with plucked envelopes;
- ``other``: noise through a slowly moving band (a pad), quieter.

The members' errors depend on frequency, through a crossover at `CROSSOVER` Hz
(``low(f) = 1 / (1 + (f / fc)^4)``, ``high = 1 − low``): member A leaks `LEAK` of the
other stems into its low band and loses `LOSS` of its own stem there; member B does the
same in its high band. So A is right above the crossover and B below it: a per-frequency
blend can undo both, a fixed rule (average, median, min/max magnitude) cannot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

STEMS = ("vocals", "drums", "bass", "other")
CROSSOVER = 1000.0
LEAK = 0.5
LOSS = 0.3


def _env(n: int, attack: int, decay: float, rng_len: int) -> np.ndarray:
    import numpy as np

    t = np.arange(n)
    e = np.minimum(1.0, t / max(1, attack)) * np.exp(-t / max(1.0, decay * rng_len))
    return e


def _note_envelopes(starts: np.ndarray, n: int, attack: int, decay: float) -> np.ndarray:
    """(n,) gain: each note from its start to the next one's, `_env` shaped."""
    import numpy as np

    env = np.zeros(n)
    for i, s in enumerate(starts):
        e = starts[i + 1] if i + 1 < len(starts) else n
        env[s:e] = _env(e - s, attack, decay, e - s)
    return env


def _notes(rng: np.random.Generator, n: int, rate: int, lo: float, hi: float,
           per_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample frequency (Hz) and note-start flags for notes drawn in [lo, hi]."""
    import numpy as np

    count = max(1, int(n / rate * per_s))
    edges = np.sort(rng.integers(0, n, count - 1)) if count > 1 else np.array([], int)
    starts = np.concatenate([[0], edges]).astype(int)
    f = np.empty(n)
    for i, s in enumerate(starts):
        e = starts[i + 1] if i + 1 < len(starts) else n
        f[s:e] = rng.uniform(lo, hi)
    return f, starts


def _voice(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    import numpy as np

    f0, starts = _notes(rng, n, rate, 150, 400, 3)
    t = np.arange(n) / rate
    f = f0 * (1 + 0.01 * np.sin(2 * np.pi * rng.uniform(4, 7) * t))
    phase = 2 * np.pi * np.cumsum(f) / rate
    x = sum(0.7 ** h * np.sin(h * phase) for h in range(1, 13)
            if h * f0.max() < rate / 2 - 200)
    env = _note_envelopes(starts, n, rate // 50, 0.8)
    return np.asarray(x * env)


def _drums(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    import numpy as np

    x = np.zeros(n)
    beat = int(rate * 60 / rng.uniform(90, 150) / 2)
    t = np.arange(rate // 4) / rate
    kick = np.sin(2 * np.pi * (50 * t + 60 * (1 - np.exp(-t * 30)) / 30)) * np.exp(-t * 18)
    noise = rng.standard_normal(rate // 4)
    snare = np.convolve(noise, np.ones(3) / 3, "same") * np.exp(-t * 25) * 0.6
    hat = np.diff(noise, prepend=0.0)[: rate // 20] * np.exp(-t[: rate // 20] * 120) * 0.3
    for i, s in enumerate(range(int(rng.integers(0, beat)), n, beat)):
        for sound, every in ((kick, 4), (snare, 4), (hat, 1)):
            off = 2 if sound is snare else 0
            if (i - off) % every == 0:
                m = min(len(sound), n - s)
                x[s:s + m] += sound[:m]
    return x


def _bass(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    import numpy as np

    f, starts = _notes(rng, n, rate, 40, 110, 2)
    phase = 2 * np.pi * np.cumsum(f) / rate
    x = sum(np.sin(h * phase) / h for h in range(1, 5))
    env = _note_envelopes(starts, n, rate // 200, 0.6)
    return np.asarray(x * env)


def _pad(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    import numpy as np

    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    centre = rng.uniform(300, min(3000, rate / 3))
    shape = np.exp(-0.5 * (np.log(np.maximum(freqs, 1) / centre) / 0.6) ** 2)
    x = np.fft.irfft(spec * shape, n)
    t = np.arange(n) / rate
    return np.asarray(x * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.2, 1) * t)))


def song(seed: int, seconds: float = 3.0, rate: int = 8000) -> np.ndarray:
    """Stems (4, 2, samples) float32 of song `seed`, each panned and scaled (peaks ~0.3)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    out = []
    for make, level in ((_voice, 0.3), (_drums, 0.3), (_bass, 0.3), (_pad, 0.15)):
        x = make(rng, n, rate)
        x = level * x / max(1e-9, float(np.abs(x).max()))
        pan = rng.uniform(0.3, 0.7)
        out.append(np.stack([x * np.sqrt(1 - pan), x * np.sqrt(pan)]))
    return np.stack(out).astype(np.float32)


def bands(n: int, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Gains (bins of an n-point rfft) of the low and high bands at `CROSSOVER`."""
    import numpy as np

    f = np.fft.rfftfreq(n, 1 / rate)
    low = 1.0 / (1.0 + (f / CROSSOVER) ** 4)
    return low, 1.0 - low


def members(stems: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """The two members' estimates (4, 2, samples) of a song's `stems` (same shape):
    A errs in the low band, B in the high band (see the module docstring)."""
    import numpy as np

    n = stems.shape[-1]
    low, high = bands(n, rate)
    spec = np.fft.rfft(stems.astype(np.float64), axis=-1)
    others = spec.sum(0, keepdims=True) - spec
    ests = []
    for band in (low, high):
        est = spec + band * (LEAK * others - LOSS * spec)
        ests.append(np.fft.irfft(est, n, axis=-1).astype(np.float32))
    return ests[0], ests[1]


def museval_sdr(references: np.ndarray, estimates: np.ndarray, rate: int) -> list[float]:
    """BSS Eval v4 SDR per stem (dB): museval with 1 s windows, median over frames (NaN
    frames, e.g. silent references, skipped). `references`, `estimates`: (stems,
    channels, samples). museval is a test dependency; swap in `stembridge eval`'s
    function once it exists."""
    import museval
    import numpy as np

    ref = np.transpose(references, (0, 2, 1)).astype(np.float64)
    est = np.transpose(estimates, (0, 2, 1)).astype(np.float64)
    sdr, _isr, _sir, _sar = museval.evaluate(ref, est, win=rate, hop=rate)
    return [float(np.nanmedian(row)) for row in sdr]


def framewise_sdr(references: np.ndarray, estimates: np.ndarray, rate: int) -> list[float]:
    """Per stem, the median over 1 s frames of 10·log10(Σ s² / Σ (s − ŝ)²) (dB), frames
    with a silent reference or estimate skipped: what BSS Eval v4 (`museval_sdr`) gives
    for SDR, whose image-mode SDR is exactly this ratio (a test checks the two agree),
    at a fraction of the cost (museval also solves the SIR/SAR projections)."""
    import numpy as np

    n = references.shape[-1]
    out = []
    for ref, est in zip(references.astype(np.float64), estimates.astype(np.float64),
                        strict=True):
        vals = []
        for a in range(0, n - rate + 1, rate) if n >= rate else [0]:
            s, e = ref[:, a:a + rate], est[:, a:a + rate]
            if not s.any() or not e.any():
                continue
            err = float(np.sum((s - e) ** 2))
            vals.append(10 * np.log10(np.sum(s * s) / err) if err > 0 else float("inf"))
        out.append(float(np.median(vals)) if vals else float("nan"))
    return out


FIXED_RULES = ("avg_wave", "min_spec", "max_spec", "avg_fft")


def fixed_rule(rule: str, est_a: np.ndarray, est_b: np.ndarray) -> np.ndarray:
    """A fixed ensemble rule of `engine.models.ensemble` on two estimates (stems,
    channels, samples); ``median_wave`` of two members equals ``avg_wave``."""
    import numpy as np
    import torch

    from engine.models import ensemble

    total = est_a.shape[-1]
    w = torch.ones(2)
    out = []
    for j in range(est_a.shape[0]):
        xa, xb = torch.from_numpy(est_a[j]), torch.from_numpy(est_b[j])
        if rule == "avg_wave":
            out.append((xa + xb) / 2)
        else:
            out.append(ensemble.spectral(rule, [xa, xb], w, 0, total, total))
    return np.asarray(torch.stack(out).numpy())
