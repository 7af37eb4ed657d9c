"""What every separation model looks like to the chunk loop.

A `SeparationModel` maps a batch of fixed-length waveform windows at the model's sample
rate to per-source waveforms of the same length:

    forward(mix: (batch, channels, samples)) -> (batch, sources, channels, samples)

`samples` is whatever `valid_length(n)` returned for a window that holds `n` real samples;
the chunk loop pads each window to that length with the real neighbouring audio (zeros
outside the track), exactly as `demucs.apply.TensorChunk.padded` does, and trims the
output back to the `n` real samples, centred.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

#: Device memory assumed for one window's forward pass when a spec does not say, bytes.
DEFAULT_WINDOW_BYTES = 1 << 30


@dataclass(frozen=True)
class ModelSpec:
    """Static facts about a named model, known without loading it.

    Attributes:
        name: registry name, e.g. ``"htdemucs"``.
        version: a string that changes whenever the weights change (part of the cache key).
        family: ``"spleeter"``, ``"demucs"`` or ``"mdx"``: which loader builds it.
        sources: stem names in the order the model outputs them.
        samplerate: the rate the model runs at, in Hz.
        segment_seconds: training window length in seconds (the chunk loop's window).
        default_overlap: fraction of a window shared with the next one.
        description: one line for `stembridge models list`.
        size_mb: approximate download size of the weights, in MB.
        license: licence of the weights.
        embedded: True when the weights ship inside a registry package (no download).
        files: the files expected in the model's folder ``<models dir>/<name>/`` (what
            `stembridge models fetch` writes there, or what one copies there by hand).
        hub_repo: the Hugging Face repository the weights are fetched from ("" if none).
        extra: family-specific facts (demucs: ``sigs``, the bag's model signatures;
            mdx: ``mdx``, its UVR settings; every downloadable file: ``urls`` and
            ``sha256``, file name -> value).
        scores: published SDRs as ``(benchmark, stem, dB)``; figures of different
            benchmarks are never compared (they differ by 1-2 dB).
    """

    name: str
    version: str
    family: str
    sources: tuple[str, ...]
    samplerate: int
    segment_seconds: float
    default_overlap: float = 0.25
    description: str = ""
    size_mb: float = 0.0
    license: str = ""
    embedded: bool = False
    files: tuple[str, ...] = ()
    hub_repo: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    scores: tuple[tuple[str, str, float], ...] = ()

    @property
    def window_bytes(self) -> int:
        """Device memory one window's forward pass needs, bytes: ``extra
        ["bytes_per_window"]``, else `DEFAULT_WINDOW_BYTES` (what batch sizes are
        chosen from)."""
        return int(self.extra.get("bytes_per_window", DEFAULT_WINDOW_BYTES))


class SeparationModel(Protocol):
    """A loaded, ready-to-run model (weights on a device, eval mode)."""

    spec: ModelSpec
    #: window length in samples at ``spec.samplerate`` (the chunk loop's segment).
    segment_length: int
    #: Where a window shorter than the model's input sits: "center" (demucs, with real
    #: neighbouring audio on both sides) or "start" (padding after it).
    align: str
    #: Whether the engine should normalise the whole track to zero mean / unit std before
    #: separation and undo it afterwards (what `demucs.api.Separator` does).
    normalize_input: bool

    def valid_length(self, length: int) -> int:
        """Input length (samples) the model needs for a window holding `length` samples."""
        ...

    def forward(self, mix: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """(batch, channels, samples) float32 -> (batch, sources, channels, samples).

        `length` is the number of real samples in each window (centred in `samples`); a
        model may use it (a bag whose members need different padded lengths) or ignore it
        and return all `samples` (the caller trims)."""
        ...

    # Optional: ``window_layout(total_length, overlap) -> engine.chunking.WindowLayout``,
    # the model's own windows and weights (MDX-Net); without it the chunk loop uses
    # demucs' layout and triangular weight.

    def to(self, device: torch.device) -> SeparationModel:
        """Move weights to `device`; returns self."""
        ...

    @property
    def device(self) -> torch.device: ...
