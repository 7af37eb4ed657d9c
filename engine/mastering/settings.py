"""The typed configuration of the mastering chain: one dataclass per stage, gathered in
`ChainSettings`. `engine.mastering.recipe` fills it from an analysis and an intent; every
field is plain data, so the whole chain's settings go into the report as JSON
(`ChainSettings.to_dict`) and into the cache key.

Units: frequencies Hz, levels and gains dB (true peak dBTP), times ms, ratios x:1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: The six analysis bands (name, low Hz, high Hz), also the corrective EQ's bands.
BANDS: tuple[tuple[str, float, float], ...] = (
    ("sub", 20.0, 60.0),
    ("bass", 60.0, 200.0),
    ("low_mids", 200.0, 500.0),
    ("mids", 500.0, 2000.0),
    ("presence", 2000.0, 6000.0),
    ("air", 6000.0, 16000.0),
)


@dataclass
class HighPass:
    """Rumble filter: Butterworth high-pass."""

    enabled: bool = True
    freq: float = 25.0
    order: int = 2


@dataclass
class CorrectiveEQ:
    """Static, smooth EQ towards a tonal curve: one gain per band of `BANDS` (low shelf
    for sub, high shelf for air, broad bells between), each within
    [-max_cut_db, +max_boost_db]."""

    gains_db: dict[str, float] = field(default_factory=dict)
    max_boost_db: float = 2.5
    max_cut_db: float = 4.0


@dataclass
class DynamicBand:
    """One dynamic-EQ cut: acts only while the band's level relative to the whole signal
    rises more than `threshold_db` above its typical value (`baseline_db`)."""

    name: str
    freq: float
    q: float
    baseline_db: float = 0.0
    threshold_db: float = 2.0
    ratio: float = 3.0
    max_cut_db: float = 4.0
    attack_ms: float = 10.0
    release_ms: float = 120.0
    key: str = "mix"  # "mix", or a stem name when stem-aware ("instrumental")


@dataclass
class DynamicEQ:
    enabled: bool = True
    bands: list[DynamicBand] = field(default_factory=list)


@dataclass
class Compressor:
    """Wideband (glue) or per-band compressor, RMS detector, soft knee, linked stereo."""

    enabled: bool = True
    threshold_db: float = -18.0
    ratio: float = 1.5
    knee_db: float = 6.0
    attack_ms: float = 30.0
    release_ms: float = 200.0
    makeup_db: float = 0.0
    key: str = "mix"


@dataclass
class Multiband:
    """Compression per band on Linkwitz-Riley crossovers (bands sum back flat)."""

    enabled: bool = True
    crossovers: list[float] = field(default_factory=lambda: [200.0, 3000.0])
    bands: list[Compressor] = field(default_factory=list)


@dataclass
class Saturation:
    """Soft clip above `knee` (linear amplitude) with `oversample`x oversampling."""

    enabled: bool = False
    drive_db: float = 0.0
    knee: float = 0.7
    oversample: int = 4


@dataclass
class Stereo:
    """Side-signal shaping: below `low_hz` the side is reduced by `low_side_cut` (0..1,
    mono-safe lows); above `high_hz` it is scaled by `high_width_db` (widening only the
    highs); between, by `mid_width_db` (<= 0: narrowing only). The mid is never touched."""

    enabled: bool = False
    low_hz: float = 120.0
    high_hz: float = 4000.0
    low_side_cut: float = 0.0
    mid_width_db: float = 0.0
    high_width_db: float = 0.0


@dataclass
class Limiter:
    """Look-ahead true-peak limiter, the last stage; `drive_db` is applied before it."""

    ceiling_dbtp: float = -1.0
    drive_db: float = 0.0
    lookahead_ms: float = 2.0
    release_ms: float = 80.0
    oversample: int = 4
    margin_db: float = 0.1


@dataclass
class ChainSettings:
    """Every stage in processing order, plus the targets of the loop."""

    target_lufs: float = -14.0
    highpass: HighPass = field(default_factory=HighPass)
    eq: CorrectiveEQ = field(default_factory=CorrectiveEQ)
    dynamic_eq: DynamicEQ = field(default_factory=DynamicEQ)
    glue: Compressor = field(default_factory=Compressor)
    multiband: Multiband = field(default_factory=Multiband)
    saturation: Saturation = field(default_factory=Saturation)
    stereo: Stereo = field(default_factory=Stereo)
    limiter: Limiter = field(default_factory=Limiter)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
