"""Typed engine configuration and the per-user folders it uses.

Every field has a default, environment variables override the defaults, and CLI flags
override both (see `bridge.cli`). Environment variables are read when a config is created (`protocol.settings`), never
at import time; nothing here touches the disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import InvalidArgumentError
from protocol import settings

#: Values of `EngineConfig.batcher`.
BATCHER_MODES = ("auto", "on", "off")


def user_cache_dir() -> Path:
    """Root of stembridge's per-user cache: ``$STEMBRIDGE_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/stembridge``, else ``~/.cache/stembridge`` (``%LOCALAPPDATA%`` on Windows).
    The rule is part of the protocol (clients find the discovery file through it)."""
    return settings.cache_root()


def models_dir() -> Path:
    """Where model weights live: ``$STEMBRIDGE_MODELS_DIR``, else ``<cache>/models``.

    One sub-folder per model name, e.g. ``<models>/htdemucs/htdemucs.yaml``."""
    return settings.models_dir()


def results_cache_dir() -> Path:
    """Where finished separations are cached (see `engine.cache`)."""
    return user_cache_dir() / "results"


@dataclass
class Limits:
    """Input validation limits, in seconds, Hz and bytes.

    Attributes:
        max_samplerate: highest input rate accepted, Hz (libsndfile reads rates up to
            2 GHz from a header; a 4 KB file can declare hours at 8 MHz).
        max_source_bytes: largest source file accepted, bytes.
        max_decoded_bytes: largest decoded input, bytes (frames x channels x 4), checked
            from the header before decoding; 0: a quarter of the machine's memory.
        read_timeout: seconds a source may take to be hashed or decoded by ffmpeg.
    """

    min_seconds: float = 0.05
    max_seconds: float = field(default_factory=settings.max_seconds)
    low_samplerate: int = 22050
    short_seconds: float = 3.0
    max_samplerate: int = settings.MAX_SAMPLERATE
    max_source_bytes: int = field(default_factory=settings.max_source_bytes)
    max_decoded_bytes: int = 0
    read_timeout: float = field(default_factory=settings.read_timeout)

    def decoded_bytes_limit(self) -> int:
        """`max_decoded_bytes`, or a quarter of physical memory (4 GiB if unknown)."""
        if self.max_decoded_bytes:
            return self.max_decoded_bytes
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
        except (ValueError, OSError, AttributeError):
            return 4 * 2**30


@dataclass
class EngineConfig:
    """How the engine runs.

    Attributes:
        device: ``"auto"`` (CUDA, else MPS, else CPU) or a torch device string.
        precision: ``"auto"`` (bf16/fp16 autocast on GPU, bf16 on a CPU that supports it,
            else fp32), ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        batch_size: windows per forward pass; 0 chooses from device memory.
        use_cache: look up and store finished results in the results cache.
        cache_dir: results cache root (default `results_cache_dir()`).
        models_dir: model weights root (default `models_dir()`).
        threads: torch intra-op threads; 0 keeps torch's default.
        cache_max_bytes: size budget of the results cache (least recently used entries
            are evicted after each commit); 0: unbounded.
        model_memory_mb: budget for warm models' weights, in MB; the least recently used
            models are unloaded to stay under it (the model in use is always kept).
            0: a quarter of the machine's RAM (CPU) or half the GPU's memory.
        compile: build each loaded model's compiled forward in the background
            (`engine.acceleration`; jobs run eagerly until it is ready). The server sets
            it; a one-shot process gains nothing from a build it would not live to use.
        batcher: windows of concurrent jobs on the same model in one forward pass
            (`engine.batcher`): ``"auto"`` (on CUDA only: on a CPU a pass of several
            windows is no faster than one at a time), ``"on"`` or ``"off"``.
        batcher_windows: windows per merged pass at most; 0: as many as fit the GPU's
            free memory (`engine.device.auto_batch_size`, per model), 4 elsewhere.
        batcher_wait_ms: milliseconds a window waits at most for other jobs' windows
            to join its pass.
    """

    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 0
    use_cache: bool = True
    cache_dir: Path | None = None
    models_dir: Path | None = None
    threads: int = 0
    model_memory_mb: float = field(default_factory=settings.model_memory_mb)
    limits: Limits = field(default_factory=Limits)
    cache_max_bytes: int = field(default_factory=settings.cache_max_bytes)
    compile: bool = False
    batcher: str = "auto"
    batcher_windows: int = 0
    batcher_wait_ms: float = 2.0

    def batcher_enabled(self, device_type: str) -> bool:
        """Whether jobs on a `device_type` ("cuda", "cpu", ...) share a batcher."""
        mode = (self.batcher or "auto").lower()
        if mode not in BATCHER_MODES:
            raise InvalidArgumentError(
                f"The batcher setting is {self.batcher!r}; use one of {', '.join(BATCHER_MODES)}.")
        return mode == "on" or (mode == "auto" and device_type == "cuda")

    def resolved_cache_dir(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else results_cache_dir()

    def resolved_models_dir(self) -> Path:
        return self.models_dir if self.models_dir is not None else models_dir()
