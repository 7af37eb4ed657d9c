"""BSS Eval v4 figures through `museval` (the standard, MIT), and their aggregation.

Every figure is in dB. Per track, `museval.evaluate` gives one value per 1 s frame
(window = hop = `window_s` seconds, time-invariant distortion filters: BSS Eval v4 in its
"images" form, as SiSEC 2018 and MUSDB18 report it); a track's figure is the median over
its frames, and a data set's figure is the median over its tracks. As in museval, a frame
in which any reference or any estimate of the evaluated set is silent (all zeros) is nan
for every stem of the set, and nan frames (and nan tracks) are ignored by the medians.

museval refuses a set in which a whole reference or estimate is silent; here such a set
gets nan in every frame instead (what its frame rule would give), so one silent stem
leaves a track unscored rather than stopping an evaluation.

A perfect estimate has SDR = +inf. SDR and ISR are scale-sensitive: an estimate
``g * reference`` has SDR = ISR = -20 log10 |1 - g| dB (6.02 dB for g = 0.5).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from engine.errors import InvalidArgumentError, PackageMissingError

__all__ = ["COMPOSITES", "METRICS", "bss_eval", "bss_eval_frames", "evaluation_sets",
           "median", "museval_module", "museval_version"]

#: The figures, in museval's names.
METRICS = ("SDR", "SIR", "SAR", "ISR")
#: Estimate names whose reference is the sum of every reference stem but the vocals.
COMPOSITES = ("instrumental", "accompaniment")


def museval_module() -> Any:
    """The museval package, or PACKAGE_MISSING saying how to install it."""
    try:
        import museval
    except ImportError as exc:
        raise PackageMissingError(
            "Measuring separation quality (BSS Eval v4) needs the museval package, which is "
            "not installed. It comes with stembridge's 'eval' extra: "
            "pip install 'stembridge[eval]'.") from exc
    return museval


def museval_version() -> str:
    """The installed museval's version (part of the score cache key and the report)."""
    from importlib import metadata

    try:
        return metadata.version("museval")
    except metadata.PackageNotFoundError:
        return "unknown"


def median(values: Iterable[float]) -> float:
    """The median of `values` ignoring nan (museval's rule); nan when none is a number.
    +inf counts as a number (a perfect estimate)."""
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    return float(np.median(arr)) if arr.size else math.nan


def _stack(arrays: Mapping[str, np.ndarray], names: list[str], what: str) -> np.ndarray:
    """(stems, frames, channels) float64 from `arrays`, checked."""
    out = []
    for name in names:
        arr = np.asarray(arrays[name])
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise InvalidArgumentError(
                f"The {what} of {name!r} has shape {arr.shape}; it must be "
                "(frames, channels) with at least one frame and one channel.")
        if not np.isfinite(arr).all():
            raise InvalidArgumentError(f"The {what} of {name!r} holds NaN or Inf samples.")
        out.append(arr.astype(np.float64, copy=False))
    shapes = {a.shape for a in out}
    if len(shapes) != 1:
        raise InvalidArgumentError(
            f"Every {what} must have the same (frames, channels); got "
            + ", ".join(f"{n} {a.shape}" for n, a in zip(names, out, strict=True)) + ".")
    return np.stack(out)


def bss_eval_frames(references: Mapping[str, np.ndarray], estimates: Mapping[str, np.ndarray],
                    rate: int, *, window_s: float = 1.0) -> dict[str, dict[str, list[float]]]:
    """Per-frame BSS Eval v4 figures of every stem, evaluated jointly (the interference
    of a stem is measured against the other references of the set).

    Args:
        references, estimates: stem -> float array (frames, channels), same keys, all of
            one shape, at `rate` Hz.
        rate: sample rate in Hz.
        window_s: frame length and hop in seconds (1.0 is the standard).

    Returns:
        stem -> metric ("SDR", "SIR", "SAR", "ISR") -> one value per frame in dB (nan for
        a frame with a silent source; the last partial frame is not scored, as in museval).
    """
    names = list(references)
    if not names or sorted(names) != sorted(estimates):
        raise InvalidArgumentError(
            f"References ({', '.join(names) or 'none'}) and estimates "
            f"({', '.join(estimates) or 'none'}) must name the same stems, at least one.")
    if rate <= 0 or window_s <= 0:
        raise InvalidArgumentError(f"The rate ({rate} Hz) and window ({window_s} s) must "
                                   "be positive.")
    refs = _stack(references, names, "reference")
    ests = _stack(estimates, names, "estimate")
    if refs.shape != ests.shape:
        raise InvalidArgumentError(
            f"Estimates {ests.shape[1:]} and references {refs.shape[1:]} differ in "
            "(frames, channels); separate the same mixture the references belong to.")
    museval = museval_module()
    win = max(1, int(round(window_s * rate)))
    if _any_silent(refs) or _any_silent(ests):
        nwin = museval.metrics.Framing(win, win, refs.shape[1]).nwin
        blank = [math.nan] * nwin
        return {n: {m: list(blank) for m in METRICS} for n in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sdr, isr, sir, sar = museval.evaluate(refs, ests, win=win, hop=win)
    table = {"SDR": sdr, "SIR": sir, "SAR": sar, "ISR": isr}
    return {n: {m: [float(v) for v in table[m][i]] for m in METRICS}
            for i, n in enumerate(names)}


def _any_silent(stack: np.ndarray) -> bool:
    return bool((~stack.reshape(stack.shape[0], -1).any(axis=1)).any())


def bss_eval(references: Mapping[str, np.ndarray], estimates: Mapping[str, np.ndarray],
             rate: int, *, window_s: float = 1.0) -> dict[str, dict[str, float]]:
    """BSS Eval v4 of one track: stem -> metric -> the median over its frames in dB,
    nan frames ignored (nan when every frame is nan). Arguments as `bss_eval_frames`."""
    frames = bss_eval_frames(references, estimates, rate, window_s=window_s)
    return {n: {m: median(v) for m, v in per.items()} for n, per in frames.items()}


def evaluation_sets(estimate_stems: Iterable[str], reference_stems: Iterable[str]
                    ) -> list[dict[str, tuple[str, ...]]]:
    """The stem sets evaluated jointly, as museval's MUSDB18 evaluation forms them: the
    estimates that have a reference of the same name in one set, and an instrumental (or
    accompaniment) estimate with the vocals in a second set, its reference being the sum
    of every reference but the vocals. Each set maps an estimate name to the reference
    stems it is compared with (summed). A stem in two sets takes its figures from the last
    (the vocals from the vocals/instrumental pair, as museval does). Estimates without a
    reference are left out; a set of one stem has no interference (SIR = +inf)."""
    refs = list(reference_stems)
    ests = list(estimate_stems)
    direct: dict[str, tuple[str, ...]] = {n: (n,) for n in ests if n in refs}
    rest = tuple(r for r in refs if r != "vocals")
    composite = next((n for n in ests if n in COMPOSITES and n not in refs), None)
    sets: list[dict[str, tuple[str, ...]]] = []
    if composite is not None and "vocals" in refs and "vocals" in ests and rest:
        if len(direct) > 1:
            sets.append(direct)
        sets.append({"vocals": ("vocals",), composite: rest})
    elif direct:
        sets.append(direct)
    return sets
