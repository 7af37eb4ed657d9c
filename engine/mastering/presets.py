"""Intents and platform targets: what a master is for.

An `Intent` is a target (LUFS-I, true-peak ceiling) plus how hard the chain works for it.
`resolve` turns the user's choices (preset, platform, overrides, amount) into one
`Intent`; the reference intent takes its loudness and tonal curve from a reference's
analysis (see `engine.mastering.recipe`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from engine.errors import InvalidArgumentError

#: Named delivery targets: (integrated LUFS, true-peak ceiling dBTP). The streaming
#: services normalise to these levels (their published loudness targets).
PLATFORMS: dict[str, tuple[float, float]] = {
    "spotify": (-14.0, -1.0),
    "apple": (-16.0, -1.0),
    "youtube": (-14.0, -1.0),
    "amazon": (-14.0, -2.0),
    "club": (-8.0, -0.5),
}

PRESETS = ("streaming", "loud", "reference")


@dataclass(frozen=True)
class Intent:
    """What the loop aims for and how the chain is set up.

    Attributes:
        name: ``"streaming"``, ``"loud"`` or ``"reference"``.
        platform: a key of `PLATFORMS` or None.
        target_lufs, true_peak_db: the targets (LUFS-I, dBTP ceiling).
        amount: 0..1, strength of the corrections (EQ, dynamic EQ, compression, stereo);
            the loudness target is met at any amount.
        glue_ratio, multiband_ratio: compression ratios at amount 1.
        saturation: soft-clip before the limiter (dense masters).
        tolerance_lu: the loop stops within this distance of the target.
        max_passes: bound on the loop's passes.
    """

    name: str = "streaming"
    platform: str | None = None
    target_lufs: float = -14.0
    true_peak_db: float = -1.0
    amount: float = 1.0
    glue_ratio: float = 1.5
    multiband_ratio: float = 1.6
    saturation: bool = False
    tolerance_lu: float = 0.1
    max_passes: int = 3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve(preset: str = "streaming", *, platform: str | None = None,
            target_lufs: float | None = None, true_peak_db: float | None = None,
            amount: float = 1.0, reference_lufs: float | None = None) -> Intent:
    """The `Intent` for the user's choices; explicit targets override the preset's and
    the platform's. `reference_lufs` is the reference's loudness (reference preset)."""
    if preset not in PRESETS:
        raise InvalidArgumentError(
            f"Unknown mastering preset '{preset}'; choose one of {', '.join(PRESETS)}.")
    if platform is not None and platform not in PLATFORMS:
        raise InvalidArgumentError(
            f"Unknown platform '{platform}'; choose one of {', '.join(PLATFORMS)}.")
    if not 0.0 <= amount <= 1.0:
        raise InvalidArgumentError(f"The amount must be between 0 and 1 (got {amount}).")
    if true_peak_db is not None and not -12.0 <= true_peak_db <= 0.0:
        raise InvalidArgumentError(
            f"The true-peak ceiling must be between -12 and 0 dBTP (got {true_peak_db}).")
    if target_lufs is not None and not -40.0 <= target_lufs <= -3.0:
        raise InvalidArgumentError(
            f"The loudness target must be between -40 and -3 LUFS (got {target_lufs}).")
    if preset == "loud":
        intent = Intent("loud", target_lufs=-8.0, true_peak_db=-1.0, glue_ratio=2.0,
                        multiband_ratio=2.0, saturation=True)
    elif preset == "reference":
        if reference_lufs is None:
            raise InvalidArgumentError("The reference preset needs a reference track.")
        intent = Intent("reference", target_lufs=reference_lufs)
    else:
        intent = Intent("streaming")
    if platform is not None:
        lufs, peak = PLATFORMS[platform]
        intent = replace(intent, platform=platform, target_lufs=lufs, true_peak_db=peak,
                         saturation=intent.saturation or lufs > -10.0)
    return replace(
        intent,
        target_lufs=intent.target_lufs if target_lufs is None else float(target_lufs),
        true_peak_db=intent.true_peak_db if true_peak_db is None else float(true_peak_db),
        amount=float(amount),
    )
