"""Writing a master: WAV (16/24-bit PCM with TPDF dither, or 32-bit float), FLAC (16/24),
MP3 (320 kbps CBR or V0, through `lameenc`, else the ffmpeg program), and resampling with
soxr. Every file is written under a temporary name in its folder and renamed into place
when complete (`protocol.files`), so a crash never leaves a partial master.

Audio is float ``(channels, frames)`` at `samplerate` Hz, nominal full scale ±1.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from engine.errors import DecoderMissingError, InvalidArgumentError, OutputError
from protocol.files import make_temp, publish

FORMATS = ("wav", "flac", "mp3")
BIT_DEPTHS = ("16", "24", "32f")
MP3_MODES = ("cbr320", "v0")
SAMPLE_RATES = (44100, 48000)


def check_format(fmt: str, bit_depth: str, mp3_mode: str = "cbr320") -> None:
    """Refuse combinations that cannot be written, before any work is done."""
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"Unknown output format '{fmt}'; choose wav, flac or mp3.")
    if bit_depth not in BIT_DEPTHS:
        raise InvalidArgumentError(
            f"Unknown bit depth '{bit_depth}'; choose 16, 24 or 32f (32-bit float).")
    if fmt == "flac" and bit_depth == "32f":
        raise InvalidArgumentError("FLAC stores 16- or 24-bit PCM, not 32-bit float; "
                                   "choose 16 or 24 bits, or WAV for float.")
    if mp3_mode not in MP3_MODES:
        raise InvalidArgumentError(f"Unknown MP3 mode '{mp3_mode}'; choose cbr320 or v0.")


def resample(x: np.ndarray, samplerate: int, target: int) -> np.ndarray:
    """soxr (very high quality) resampling of ``(channels, frames)``."""
    import soxr

    if samplerate == target:
        return x
    y = soxr.resample(np.ascontiguousarray(np.asarray(x, dtype=np.float64).T), samplerate,
                      target, quality="VHQ")
    return np.ascontiguousarray(np.asarray(y).T)


def dithered_pcm(x: np.ndarray, bits: int, seed: int = 0) -> np.ndarray:
    """Integers ``(frames, channels)`` (int16 for 16 bits, int32 left-aligned for 24) with
    triangular (TPDF, ±1 LSB) dither, clipped to the format's range."""
    rng = np.random.default_rng(seed)
    scale = float(2 ** (bits - 1))
    tpdf = rng.random(x.shape) - rng.random(x.shape)
    q = np.clip(np.round(np.asarray(x, dtype=np.float64) * scale + tpdf), -scale, scale - 1)
    if bits == 16:
        return np.ascontiguousarray(q.T.astype(np.int16))
    return np.ascontiguousarray((q.T.astype(np.int64) << 8).astype(np.int32))


def _write_soundfile(tmp: Path, x: np.ndarray, samplerate: int, fmt: str, bit_depth: str
                     ) -> None:
    import soundfile as sf

    if bit_depth == "32f":
        sf.write(str(tmp), np.ascontiguousarray(x.T, dtype=np.float32), samplerate,
                 subtype="FLOAT", format="WAV")
        return
    bits = int(bit_depth)
    sf.write(str(tmp), dithered_pcm(x, bits), samplerate, subtype=f"PCM_{bits}",
             format=fmt.upper())


def _mp3_lameenc(x: np.ndarray, samplerate: int, mode: str) -> bytes:
    import lameenc

    enc = lameenc.Encoder()
    enc.set_in_sample_rate(samplerate)
    enc.set_channels(x.shape[0])
    enc.set_quality(2)
    if mode == "v0":
        enc.set_vbr(4)  # vbr_default (mtrh)
        enc.set_vbr_quality(0)
    else:
        enc.set_bit_rate(320)
    pcm = dithered_pcm(x, 16).tobytes()
    return bytes(enc.encode(pcm)) + bytes(enc.flush())


def _mp3_ffmpeg(x: np.ndarray, samplerate: int, mode: str) -> bytes:
    from engine.audio import find_ffmpeg

    tools = find_ffmpeg()
    if tools is None:
        raise DecoderMissingError(
            "Writing MP3 needs the lameenc package or the ffmpeg program; install one, or "
            "choose WAV or FLAC.")
    quality = ["-q:a", "0"] if mode == "v0" else ["-b:a", "320k"]
    cmd = [tools[0], "-nostdin", "-v", "error", "-f", "s16le", "-ar", str(samplerate),
           "-ac", str(x.shape[0]), "-i", "pipe:0", "-codec:a", "libmp3lame", *quality,
           "-f", "mp3", "pipe:1"]
    done = subprocess.run(cmd, input=dithered_pcm(x, 16).tobytes(), capture_output=True,
                          check=False, timeout=600)
    if done.returncode != 0:
        raise OutputError("ffmpeg could not encode the MP3: "
                          + done.stderr.decode(errors="replace").strip()[-300:])
    return done.stdout


def encode_mp3(x: np.ndarray, samplerate: int, mode: str = "cbr320") -> bytes:
    """MP3 bytes of ``x``: lameenc when installed, else ffmpeg's libmp3lame."""
    try:
        import lameenc  # noqa: F401
    except ImportError:
        return _mp3_ffmpeg(x, samplerate, mode)
    return _mp3_lameenc(x, samplerate, mode)


def write(path: Path, x: np.ndarray, samplerate: int, fmt: str = "wav",
          bit_depth: str = "24", mp3_mode: str = "cbr320") -> Path:
    """Write the master atomically to `path`; returns `path`.

    Raises:
        InvalidArgumentError: an impossible format / bit depth.
        OutputError: the folder is missing, not writable or full.
    """
    check_format(fmt, bit_depth, mp3_mode)
    directory = path.parent
    if not directory.is_dir():
        raise OutputError(f"Cannot write '{path}': the folder '{directory}' does not exist.")
    tmp: Path | None = None
    try:
        tmp = make_temp(directory, "." + fmt)
        if fmt == "mp3":
            tmp.write_bytes(encode_mp3(x, samplerate, mp3_mode))
        else:
            _write_soundfile(tmp, x, samplerate, fmt, bit_depth)
        publish(tmp, path)
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise OutputError(f"Cannot write '{path}': {exc.strerror or exc}. Choose a "
                          "writable folder with enough free space.") from None
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    return path


def copy_atomic(source: Path, target: Path) -> Path:
    """Copy a finished file (a cache entry) into place atomically."""
    tmp = make_temp(target.parent, target.suffix)
    try:
        shutil.copyfile(source, tmp)
        publish(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
