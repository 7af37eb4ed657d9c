"""A mastering job on files: decode and validate, (stem-aware) master, export, report,
cache.

    result = master_file("mix.wav", MasterOptions(preset="streaming", out_dir=Path("out")))
    result.output      # out/mix.master.wav (written atomically; the input is only read)
    result.report      # also in out/mix.master.json

The input goes through the engine's own audio stage (`engine.audio.load`: every error
code and warning it has); mono stays mono, any rate works, more than two channels is
refused. Results are cached by (hash of the decoded samples, every option, the
reference's hash, engine version): the cache never serves a master of audio it did not
decode.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine import __version__ as ENGINE_VERSION
from engine.errors import CancelledError, InputError, InvalidArgumentError, OutputError
from engine.mastering import analysis as an
from engine.mastering import export, presets
from engine.mastering import stems as stem_tools
from engine.mastering.master import MasterResult, master
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from engine.separator import Engine

REPORT_SCHEMA = "stembridge.master/1"
#: The shortest usable reference, in seconds (one short-term window).
MIN_REFERENCE_SECONDS = 3.0


@dataclass
class MasterOptions:
    """Everything a master depends on besides the input (all of it goes into the cache
    key). Targets left None come from the preset and platform."""

    preset: str = "streaming"
    platform: str | None = None
    reference: Path | None = None
    target_lufs: float | None = None
    true_peak_db: float | None = None
    amount: float = 1.0
    stem_aware: bool = False
    format: str = "wav"
    bit_depth: str = "24"
    mp3_mode: str = "cbr320"
    sample_rate: int | None = None
    out_dir: Path = field(default_factory=lambda: Path("masters"))
    use_cache: bool = True

    def key_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("out_dir", "use_cache", "reference"):
            d.pop(k)
        return d


@dataclass
class MasterFileResult:
    output: Path
    report_path: Path
    report: dict[str, Any]


def _load(path: Path, what: str = "input") -> tuple[np.ndarray, int, list[str], dict[str, Any]]:
    from engine import audio
    from engine.config import Limits

    decoded, warnings = audio.load(path, Limits())
    notes = [w for w in warnings if "stem" not in w]  # the split-specific advice is moot
    return (np.asarray(decoded.samples, dtype=np.float64), decoded.samplerate, notes,
            decoded.info.to_dict())


def _samples_hash(x: np.ndarray, samplerate: int) -> str:
    h = hashlib.sha256(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    h.update(f"{samplerate}:{x.shape}".encode())
    return h.hexdigest()


def load_reference(path: Path, samplerate: int) -> tuple[dict[str, Any], str]:
    """The reference's analysis at the master's rate, and the hash of its samples.

    Raises:
        InputError: REFERENCE_UNUSABLE when it is silent or shorter than 3 s (plus the
            audio stage's own errors)."""
    x, sr, _, _ = _load(path, "reference")
    if x.shape[1] < MIN_REFERENCE_SECONDS * sr:
        raise InputError(
            f"The reference '{path}' is {x.shape[1] / sr:.2f} s long; a reference needs at "
            f"least {MIN_REFERENCE_SECONDS:g} s of music to measure its loudness and tone.",
            code=ErrorCode.REFERENCE_UNUSABLE)
    x = export.resample(x, sr, samplerate)
    result = an.analyze(x, samplerate, curves=False)
    if "silent" in result["flags"] or an.loudness_of(result) is None:
        raise InputError(f"The reference '{path}' is silent; choose a reference with music "
                         "in it.", code=ErrorCode.REFERENCE_UNUSABLE)
    return result, _samples_hash(x, samplerate)


def output_paths(path: Path, options: MasterOptions) -> tuple[Path, Path]:
    """(audio file, report file) for input `path`: ``<out>/<name>.master.<ext>`` and
    ``<out>/<name>.master.json``."""
    name = Path(path).stem
    return (options.out_dir / f"{name}.master.{options.format}",
            options.out_dir / f"{name}.master.json")


def _cache_root() -> Path:
    from protocol import settings

    return settings.cache_root() / "masters"


def _key(digest: str, options: MasterOptions, ref_digest: str | None) -> str:
    parts = json.dumps({"audio": digest, "options": options.key_dict(), "reference": ref_digest,
                        "engine": ENGINE_VERSION}, sort_keys=True)
    return hashlib.sha256(parts.encode()).hexdigest()


def _report(path: Path, info: dict[str, Any], result: MasterResult, options: MasterOptions,
            output: Path, warnings: list[str], extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": REPORT_SCHEMA,
        "engine": {"name": "stembridge", "version": ENGINE_VERSION},
        "input": {**info, "path": str(Path(path).resolve())},
        "output": {"path": str(output.resolve()), "format": options.format,
                   "bit_depth": options.bit_depth if options.format != "mp3" else None,
                   "mp3_mode": options.mp3_mode if options.format == "mp3" else None,
                   "samplerate": result.samplerate},
        "intent": result.intent.to_dict(),
        "options": {**options.key_dict(),
                    "reference": None if options.reference is None else str(options.reference)},
        "input_analysis": result.input_analysis,
        "output_analysis": result.output_analysis,
        "settings": result.settings.to_dict(),
        "stages": result.stages,
        "passes": result.passes,
        "timings": result.timings,
        "device": "cpu",
        "warnings": warnings + result.warnings,
        **extra,
    }


def _stem_keys(engine: Engine | None, path: Path, x: np.ndarray, sr: int, options: MasterOptions,
               check: Callable[[], None] | None) -> dict[str, np.ndarray]:
    if not options.stem_aware:
        return {}
    if engine is None:
        raise InvalidArgumentError("Stem-aware mastering needs the separation engine.")
    keys = stem_tools.separate_file(engine, path)
    if options.sample_rate and options.sample_rate != keys["vocals"].shape[1]:
        keys = {k: export.resample(v, _load(path)[1], sr) for k, v in keys.items()}
    n = x.shape[1]
    return {k: v[:, :n] if v.shape[1] >= n else np.pad(v, ((0, 0), (0, n - v.shape[1])))
            for k, v in keys.items()}


def _keep_balance(engine: Engine, x: np.ndarray, sr: int, intent: presets.Intent,
                  reference: dict[str, Any] | None, keys: dict[str, np.ndarray],
                  result: MasterResult, check: Callable[[], None] | None,
                  on_progress: Callable[[float, str], None] | None
                  ) -> tuple[MasterResult, dict[str, Any]]:
    """Measure the vocal-to-instrumental balance before and after (separating the master
    again); when the master moved it by more than `stem_tools.STEER_LU`, remix the input's
    vocals by the opposite amount and master once more (the report lists both tries)."""
    before = stem_tools.balance_lu(keys, sr)
    after = stem_tools.balance_lu(stem_tools.separate_samples(engine, result.samples, sr), sr)
    section = stem_tools.report(before, after)
    change = section["change_lu"]
    if change is None or abs(change) <= stem_tools.STEER_LU:
        return result, section
    steered = x + (10 ** (-change / 20) - 1.0) * keys["vocals"]
    second = master(steered, sr, intent, reference=reference, keys=keys, check=check,
                    on_progress=on_progress)
    after2 = stem_tools.balance_lu(stem_tools.separate_samples(engine, second.samples, sr), sr)
    section2 = stem_tools.report(before, after2)
    section2["first_try"] = section
    section2["vocal_steer_db"] = round(-change, 3)
    if section2["change_lu"] is not None and abs(section2["change_lu"]) < abs(change):
        return second, section2
    section["second_try"] = section2
    return result, section


def master_file(path: str | Path, options: MasterOptions, *, engine: Engine | None = None,
                check: Callable[[], None] | None = None,
                on_progress: Callable[[float, str], None] | None = None) -> MasterFileResult:
    """Master one file (see the module docstring); raises the engine's errors."""
    t0 = time.perf_counter()
    path = Path(path)
    export.check_format(options.format, options.bit_depth, options.mp3_mode)
    if options.sample_rate is not None and options.sample_rate not in export.SAMPLE_RATES:
        raise InvalidArgumentError(
            f"The output sample rate must be 44100 or 48000 Hz (got {options.sample_rate}).")
    x, sr, warnings, info = _load(path)
    target_sr = options.sample_rate or sr
    x = export.resample(x, sr, target_sr)
    reference, ref_digest = (None, None)
    if options.reference is not None:
        reference, ref_digest = load_reference(options.reference, target_sr)
    intent = presets.resolve(
        options.preset, platform=options.platform, target_lufs=options.target_lufs,
        true_peak_db=options.true_peak_db, amount=options.amount,
        reference_lufs=an.loudness_of(reference) if reference is not None else None)
    output, report_path = output_paths(path, options)
    if output.resolve() == path.resolve():
        raise OutputError(f"The master would replace its input '{path}'; choose another "
                          "output folder.")
    if not options.out_dir.is_dir():
        try:
            options.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"Cannot create the output folder '{options.out_dir}': "
                              f"{exc.strerror or exc}.") from None
    key = _key(_samples_hash(x, target_sr), options, ref_digest)
    hit = _from_cache(key, output, report_path) if options.use_cache else None
    if hit is not None:
        return hit
    keys = _stem_keys(engine, path, x, target_sr, options, check)
    result = master(x, target_sr, intent, reference=reference, keys=keys, check=check,
                    on_progress=on_progress)
    extra: dict[str, Any] = {"cache": False}
    if reference is not None:
        extra["reference"] = {"path": str(options.reference), "analysis": reference}
    if options.stem_aware and engine is not None:
        result, extra["stem_balance"] = _keep_balance(engine, x, target_sr, intent, reference,
                                                      keys, result, check, on_progress)
    if check is not None:
        check()
    export.write(output, result.samples, target_sr, options.format, options.bit_depth,
                 options.mp3_mode)
    result.timings["runtime"] = round(time.perf_counter() - t0, 4)
    report = _report(path, info, result, options, output, warnings, extra)
    from protocol.files import write_json_atomic

    write_json_atomic(report_path, report)
    if options.use_cache:
        _to_cache(key, output, report)
    return MasterFileResult(output, report_path, report)


def _from_cache(key: str, output: Path, report_path: Path) -> MasterFileResult | None:
    from engine.cache import ResultCache
    from protocol.files import write_json_atomic

    entry = ResultCache(_cache_root()).get(key)
    if entry is None or "master" not in entry.files:
        return None
    export.copy_atomic(entry.files["master"], output)
    report = {**entry.meta["report"], "cache": True}
    report["output"] = {**report["output"], "path": str(output.resolve())}
    write_json_atomic(report_path, report)
    return MasterFileResult(output, report_path, report)


def _to_cache(key: str, output: Path, report: dict[str, Any]) -> None:
    import shutil

    from engine.cache import ResultCache

    cache = ResultCache(_cache_root())
    staging = cache.staging()
    try:
        shutil.copyfile(output, staging / output.name)
        cache.commit(key, staging, {"master": output.name}, {"report": report})
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)


__all__ = ["CancelledError", "MasterFileResult", "MasterOptions", "load_reference",
           "master_file", "output_paths"]
