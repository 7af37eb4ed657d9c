"""engine.audio: decoding, validation, channel mapping, resampling and atomic writing.

Every bad input is a real file built here (no mocks of soundfile or ffmpeg); ffmpeg-only
cases are skipped when ffmpeg is not installed. A missing ffmpeg is simulated by pointing
PATH at an empty folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from engine import audio
from engine.config import Limits
from engine.errors import StembridgeError
from protocol.errors import ErrorCode

HAVE_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None
needs_ffmpeg = pytest.mark.skipif(not HAVE_FFMPEG, reason="ffmpeg/ffprobe not installed")
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- helpers


def tone(
    seconds: float, sr: int = 44100, channels: int = 2, amp: float = 0.5, seed: int = 0
) -> np.ndarray:
    """(channels, frames) float32: a different partial-rich tone per channel plus a little
    noise, so lossy codecs have something music-like to chew on."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    rows = []
    for c in range(channels):
        f0 = 220.0 * (1 + 0.25 * c)
        x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in (1, 2, 3))
        rows.append(x / 1.9 + 0.01 * rng.standard_normal(t.size))
    return (amp * np.stack(rows)).astype(np.float32)


def write(path: Path, x: np.ndarray, sr: int, **kwargs: object) -> Path:
    sf.write(str(path), x.T, sr, **kwargs)
    return path


def ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, capture_output=True
    )


def snr_db(ref: np.ndarray, est: np.ndarray) -> float:
    n = min(ref.shape[-1], est.shape[-1])
    err = ref[..., :n] - est[..., :n]
    return float(10 * np.log10(np.sum(ref[..., :n] ** 2) / max(np.sum(err**2), 1e-20)))


def aligned_snr_db(ref: np.ndarray, est: np.ndarray, max_lag: int = 4096) -> float:
    """`snr_db` after removing a codec delay of up to `max_lag` frames."""
    a, b = ref[0, : 4 * max_lag], est[0, : 5 * max_lag]
    scores = [np.dot(a, b[lag : lag + a.size]) for lag in range(max_lag)]
    lag = int(np.argmax(scores))
    return snr_db(ref, est[..., lag:])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def raises_code(code: ErrorCode, fn, *args, **kwargs) -> StembridgeError:
    with pytest.raises(StembridgeError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, str(info.value)
    return info.value


def can_write_mp3(tmp_path: Path) -> bool:
    try:
        write(tmp_path / "probe.mp3", np.zeros((1, 4410), np.float32), 44100, format="MP3")
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return False
    return True


def no_ffmpeg_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty))


# --------------------------------------------------------------------------- input errors


def test_missing_file(tmp_path: Path) -> None:
    err = raises_code(ErrorCode.INPUT_MISSING, audio.load, tmp_path / "nope.wav")
    assert "Check the path" in str(err)


def test_directory_is_missing_input(tmp_path: Path) -> None:
    err = raises_code(ErrorCode.INPUT_MISSING, audio.decode, tmp_path)
    assert "folder" in str(err) and "Choose an audio file" in str(err)


def test_text_file_named_wav_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 50)
    err = raises_code(ErrorCode.INPUT_UNREADABLE, audio.load, path)
    assert "convert it to WAV or FLAC" in str(err)


def test_random_bytes_flac_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "noise.flac"
    path.write_bytes(np.random.default_rng(1).bytes(20000))
    err = raises_code(ErrorCode.INPUT_UNREADABLE, audio.load, path)
    assert "really is an audio file" in str(err) or "really is audio" in str(err)


def test_random_bytes_without_ffmpeg_is_unreadable(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "noise.flac"
    path.write_bytes(np.random.default_rng(2).bytes(20000))
    no_ffmpeg_path(tmp_path, monkeypatch)
    err = raises_code(ErrorCode.INPUT_UNREADABLE, audio.load, path)
    assert "convert it to WAV or FLAC" in str(err)


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_truncated_wav_is_corrupt(tmp_path: Path, subtype: str) -> None:
    # libsndfile itself reports the frames present and reads them without complaint.
    full = write(tmp_path / "full.wav", tone(1.0), 44100, subtype=subtype)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    assert sf.info(str(cut)).frames < 44100  # what libsndfile says: no error at all
    err = raises_code(ErrorCode.INPUT_CORRUPT, audio.load, cut)
    assert "truncated" in str(err) and "again" in str(err)


def test_wav_header_cut_before_data_is_corrupt(tmp_path: Path) -> None:
    full = write(tmp_path / "full.wav", tone(1.0), 44100, subtype="FLOAT")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[:40])
    err = raises_code(ErrorCode.INPUT_CORRUPT, audio.load, cut)
    assert "again" in str(err)


def test_truncated_aiff_is_corrupt(tmp_path: Path) -> None:
    full = write(tmp_path / "full.aiff", tone(1.0), 44100, subtype="PCM_16")
    cut = tmp_path / "cut.aiff"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 3 // 4])
    raises_code(ErrorCode.INPUT_CORRUPT, audio.load, cut)


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.95])
def test_truncated_flac_is_corrupt(tmp_path: Path, fraction: float) -> None:
    # libsndfile opens it and reports the header's length; reading fails at the cut.
    full = write(tmp_path / "full.flac", tone(2.0), 44100, subtype="PCM_24")
    cut = tmp_path / "cut.flac"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * fraction)])
    err = raises_code(ErrorCode.INPUT_CORRUPT, audio.load, cut)
    assert "again" in str(err)


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.9, 0.99])
def test_truncated_ogg_is_corrupt(tmp_path: Path, fraction: float) -> None:
    full = write(tmp_path / "full.ogg", tone(2.0), 44100, format="OGG", subtype="VORBIS")
    cut = tmp_path / "cut.ogg"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * fraction)])
    err = raises_code(ErrorCode.INPUT_CORRUPT, audio.load, cut)
    assert "truncated" in str(err)


def test_truncated_mp3_is_corrupt(tmp_path: Path) -> None:
    if not can_write_mp3(tmp_path):
        pytest.skip("this libsndfile cannot write MP3")
    full = write(tmp_path / "full.mp3", tone(2.0), 44100, format="MP3")
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    err = raises_code(ErrorCode.INPUT_CORRUPT, audio.load, cut)
    assert "again" in str(err)


@needs_ffmpeg
def test_truncated_m4a_is_corrupt(tmp_path: Path) -> None:
    src = write(tmp_path / "src.wav", tone(2.0), 44100)
    m4a = tmp_path / "full.m4a"
    ffmpeg("-i", str(src), "-c:a", "aac", "-movflags", "+faststart", str(m4a))
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(m4a.read_bytes()[: m4a.stat().st_size * 6 // 10])
    err = raises_code(ErrorCode.INPUT_CORRUPT, audio.load, cut)
    assert "again" in str(err)


@needs_ffmpeg
def test_m4a_cut_before_its_index_is_corrupt(tmp_path: Path) -> None:
    src = write(tmp_path / "src.wav", tone(2.0), 44100)
    m4a = tmp_path / "full.m4a"
    ffmpeg("-i", str(src), "-c:a", "aac", str(m4a))  # index ("moov") at the end
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(m4a.read_bytes()[: m4a.stat().st_size - 200])
    raises_code(ErrorCode.INPUT_CORRUPT, audio.load, cut)


def test_zero_length_wav_is_empty(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.wav", np.zeros((2, 0), np.float32), 44100)
    err = raises_code(ErrorCode.INPUT_EMPTY, audio.load, path)
    assert "no audio" in str(err) and "Export" in str(err)


def test_zero_byte_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "zero.wav"
    path.touch()
    err = raises_code(ErrorCode.INPUT_EMPTY, audio.load, path)
    assert "0 bytes" in str(err) and "again" in str(err)


def test_too_short(tmp_path: Path) -> None:
    path = write(tmp_path / "blip.wav", tone(0.01), 44100)
    err = raises_code(ErrorCode.INPUT_TOO_SHORT, audio.load, path, Limits(min_seconds=0.05))
    assert "longer excerpt" in str(err)


def test_too_long_from_header(tmp_path: Path) -> None:
    path = write(tmp_path / "long.wav", tone(2.0, sr=8000), 8000)
    err = raises_code(ErrorCode.INPUT_TOO_LONG, audio.load, path, Limits(max_seconds=1.0))
    assert "Split it" in str(err) and "STEMBRIDGE_MAX_SECONDS" in str(err)


def _sparse_wav(path: Path, frames: int, sr: int) -> Path:
    """A mono 16-bit WAV of `frames` zero frames that takes no disk space."""
    data = frames * 2
    header = b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sr, sr * 2, 2, 16)
    header += b"data" + struct.pack("<I", data)
    with open(path, "wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + data)
    return path


def test_ten_hour_file_is_refused_without_decoding(tmp_path: Path) -> None:
    # Decoding 10 h would take seconds and >1 GB; the header check answers at once.
    path = _sparse_wav(tmp_path / "ten-hours.wav", 10 * 3600 * 8000, 8000)
    t0 = time.perf_counter()
    err = raises_code(ErrorCode.INPUT_TOO_LONG, audio.load, path, Limits(max_seconds=3600))
    assert time.perf_counter() - t0 < 1.0
    assert "10:00:00" in str(err)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_wav(tmp_path: Path, bad: float) -> None:
    x = tone(1.0)
    x[1, 22050] = bad
    path = write(tmp_path / "bad.wav", x, 44100, subtype="FLOAT")
    err = raises_code(ErrorCode.INPUT_NOT_FINITE, audio.load, path)
    assert "0.500 s" in str(err) and "Re-render" in str(err)


def test_three_channels_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "surround.wav", tone(1.0, channels=3), 44100)
    err = raises_code(ErrorCode.INPUT_CHANNELS, audio.load, path)
    assert "-ac 2" in str(err) and "3 channels" in str(err)


def test_validate_refuses_channels_after_decode(tmp_path: Path) -> None:
    path = write(tmp_path / "surround.wav", tone(1.0, channels=3), 44100)
    decoded = audio.decode(path)  # decode applies no limits
    assert decoded.samples.shape == (3, 44100)
    raises_code(ErrorCode.INPUT_CHANNELS, audio.validate, decoded, Limits())


@needs_ffmpeg
def test_missing_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write(tmp_path / "src.wav", tone(1.0), 44100)
    m4a = tmp_path / "song.m4a"
    ffmpeg("-i", str(src), "-c:a", "aac", str(m4a))
    no_ffmpeg_path(tmp_path, monkeypatch)
    assert audio.find_ffmpeg() is None
    err = raises_code(ErrorCode.DECODER_MISSING, audio.load, m4a)
    for hint in (
        "sudo apt-get install ffmpeg",
        "brew install ffmpeg",
        "winget install ffmpeg",
        "WAV or FLAC",
    ):
        assert hint in str(err)


@needs_ffmpeg
def test_wav_with_codec_libsndfile_lacks(tmp_path: Path, monkeypatch) -> None:
    # libsndfile says "Malformed 'fmt ' chunk" for these, exactly as for a damaged header.
    x = tone(2.0, sr=48000)
    src = write(tmp_path / "src.wav", x, 48000, subtype="FLOAT")
    mp2 = tmp_path / "broadcast.wav"
    ffmpeg("-i", str(src), "-c:a", "mp2", "-b:a", "256k", "-f", "wav", str(mp2))
    decoded = audio.decode(mp2)
    assert (decoded.info.decoder, decoded.info.subtype) == ("ffmpeg", "mp2")
    assert aligned_snr_db(x, decoded.samples) > 20  # MP2 adds a decoder delay
    no_ffmpeg_path(tmp_path, monkeypatch)
    err = raises_code(ErrorCode.DECODER_MISSING, audio.load, mp2)
    assert "0x0050" in str(err) and "apt-get install ffmpeg" in str(err)


def test_missing_ffmpeg_unknown_extension(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "song.xyz"
    path.write_bytes(b"\x00\x01" * 5000)
    no_ffmpeg_path(tmp_path, monkeypatch)
    err = raises_code(ErrorCode.DECODER_MISSING, audio.load, path)
    assert "Install ffmpeg" in str(err)


def test_stream_index_on_single_stream_file(tmp_path: Path) -> None:
    path = write(tmp_path / "a.wav", tone(1.0), 44100)
    raises_code(ErrorCode.INVALID_ARGUMENT, audio.decode, path, stream_index=1)
    raises_code(ErrorCode.INVALID_ARGUMENT, audio.decode, path, stream_index=-1)


def test_error_exit_codes_are_stable(tmp_path: Path) -> None:
    err = raises_code(ErrorCode.INPUT_MISSING, audio.load, tmp_path / "x.wav")
    assert err.exit_code == 3
    assert err.to_dict()["code"] == "input_missing"


# --------------------------------------------------------------------------- warnings


def test_clean_input_has_no_warnings(tmp_path: Path) -> None:
    path = write(tmp_path / "ok.wav", tone(4.0), 44100, subtype="PCM_24")
    decoded, warnings = audio.load(path, Limits())
    assert warnings == []
    assert decoded.samples.dtype == np.float32 and decoded.samples.flags.c_contiguous


def test_silent_input_warns(tmp_path: Path) -> None:
    path = write(tmp_path / "silence.wav", np.zeros((2, 4 * 44100), np.float32), 44100)
    _, warnings = audio.load(path, Limits())
    assert len(warnings) == 1 and "silent" in warnings[0]
    quiet = write(tmp_path / "quiet.wav", tone(4.0, amp=10 ** (-70 / 20)), 44100, subtype="FLOAT")
    _, warnings = audio.load(quiet, Limits())
    assert len(warnings) == 1 and "silent" in warnings[0] and "dBFS" in warnings[0]


def test_clipped_input_warns(tmp_path: Path) -> None:
    x = np.clip(tone(4.0, amp=1.5), -1.0, 1.0)
    path = write(tmp_path / "loud.wav", x, 44100, subtype="FLOAT")
    _, warnings = audio.load(path, Limits())
    assert len(warnings) == 1 and "clipped" in warnings[0]


def test_a_few_full_scale_samples_do_not_warn(tmp_path: Path) -> None:
    x = tone(4.0)
    x[0, 1000:1003] = 1.0
    path = write(tmp_path / "peaks.wav", x, 44100, subtype="FLOAT")
    assert audio.load(path, Limits())[1] == []


def test_low_samplerate_warns(tmp_path: Path) -> None:
    path = write(tmp_path / "phone.wav", tone(4.0, sr=8000), 8000)
    _, warnings = audio.load(path, Limits(low_samplerate=22050))
    assert len(warnings) == 1 and "8000 Hz" in warnings[0]


def test_short_input_warns(tmp_path: Path) -> None:
    path = write(tmp_path / "short.wav", tone(1.0), 44100)
    _, warnings = audio.load(path, Limits(short_seconds=3.0))
    assert len(warnings) == 1 and "short" in warnings[0]


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    ("ext", "fmt", "subtype", "tolerance"),
    [
        ("wav", "WAV", "PCM_16", 2.0**-15),
        ("wav", "WAV", "PCM_24", 2.0**-23),
        ("wav", "WAV", "FLOAT", 0.0),
        ("flac", "FLAC", "PCM_16", 2.0**-15),
        ("flac", "FLAC", "PCM_24", 2.0**-23),
        ("aiff", "AIFF", "PCM_16", 2.0**-15),
    ],
)
def test_decode_lossless(
    tmp_path: Path, ext: str, fmt: str, subtype: str, tolerance: float
) -> None:
    x = tone(1.5, sr=48000)
    path = write(tmp_path / f"a.{ext}", x, 48000, format=fmt, subtype=subtype)
    decoded = audio.decode(path)
    assert decoded.samples.shape == x.shape and decoded.samplerate == 48000
    assert np.abs(decoded.samples - x).max() <= tolerance
    info = decoded.info
    assert (info.format, info.subtype, info.decoder) == (fmt, subtype, "soundfile")
    assert (info.channels, info.frames, info.duration) == (2, x.shape[1], 1.5)
    json.dumps(info.to_dict())


def test_decode_ogg_vorbis(tmp_path: Path) -> None:
    x = tone(2.0)
    path = write(tmp_path / "a.ogg", x, 44100, format="OGG", subtype="VORBIS")
    decoded = audio.decode(path)
    assert decoded.samples.shape == x.shape and decoded.info.format == "OGG"
    assert snr_db(x, decoded.samples) > 20


def test_decode_mp3(tmp_path: Path) -> None:
    if not can_write_mp3(tmp_path):
        pytest.skip("this libsndfile cannot write MP3")
    x = tone(2.0)
    path = write(tmp_path / "a.mp3", x, 44100, format="MP3")
    decoded = audio.decode(path)
    assert decoded.samples.shape == x.shape
    assert (decoded.info.format, decoded.info.decoder) == ("MP3", "soundfile")
    assert snr_db(x, decoded.samples) > 20


@needs_ffmpeg
def test_decode_m4a_alac_exact(tmp_path: Path) -> None:
    src = write(tmp_path / "src.wav", tone(2.0), 44100, subtype="PCM_16")
    m4a = tmp_path / "a.m4a"
    ffmpeg("-i", str(src), "-c:a", "alac", str(m4a))
    decoded = audio.decode(m4a)
    assert (decoded.info.format, decoded.info.subtype, decoded.info.decoder) == (
        "MP4",
        "alac",
        "ffmpeg",
    )
    np.testing.assert_array_equal(decoded.samples, audio.decode(src).samples)


@needs_ffmpeg
def test_decode_m4a_aac(tmp_path: Path) -> None:
    x = tone(2.0)
    src = write(tmp_path / "src.wav", x, 44100, subtype="FLOAT")
    m4a = tmp_path / "a.m4a"
    ffmpeg("-i", str(src), "-c:a", "aac", "-b:a", "192k", str(m4a))
    decoded, _ = audio.load(m4a)
    # the container's length, not the encoder's padded last frame
    assert decoded.samples.shape == x.shape
    assert snr_db(x, decoded.samples) > 20


@needs_ffmpeg
def test_stream_index_selects_stem_streams(tmp_path: Path) -> None:
    a = write(tmp_path / "a.wav", tone(1.0, seed=1), 44100, subtype="PCM_16")
    b = write(tmp_path / "b.wav", tone(1.0, amp=0.2, seed=2), 44100, subtype="PCM_16")
    mp4 = tmp_path / "song.stem.mp4"
    ffmpeg("-i", str(a), "-i", str(b), "-map", "0:a", "-map", "1:a", "-c:a", "alac", str(mp4))
    first, second = audio.decode(mp4), audio.decode(mp4, stream_index=1)
    np.testing.assert_array_equal(first.samples, audio.decode(a).samples)
    np.testing.assert_array_equal(second.samples, audio.decode(b).samples)
    assert (first.info.audio_streams, second.info.stream_index) == (2, 1)
    err = raises_code(ErrorCode.INVALID_ARGUMENT, audio.decode, mp4, stream_index=2)
    assert "2 audio stream" in str(err)


def _vbr_mp3_without_length_header(tmp_path: Path, x: np.ndarray) -> Path:
    src = write(tmp_path / "src.wav", x, 44100, subtype="FLOAT")
    mp3 = tmp_path / "vbr.mp3"
    try:
        ffmpeg("-i", str(src), "-c:a", "libmp3lame", "-q:a", "2", "-write_xing", "0", str(mp3))
    except subprocess.CalledProcessError:
        pytest.skip("this ffmpeg has no libmp3lame")
    return mp3


@needs_ffmpeg
def test_mp3_without_length_header_is_decoded_to_the_end(tmp_path: Path, monkeypatch) -> None:
    x = tone(3.0)
    mp3 = _vbr_mp3_without_length_header(tmp_path, x)
    decoded, warnings = audio.load(mp3)
    assert decoded.info.decoder == "ffmpeg" and warnings == []
    assert decoded.frames >= x.shape[1]  # plus encoder delay/padding, no header to trim it
    # Without ffmpeg libsndfile's bitrate guess is all there is: say so.
    no_ffmpeg_path(tmp_path, monkeypatch)
    _, warnings = audio.load(mp3)
    assert any("no length header" in w for w in warnings)


@needs_ffmpeg
def test_flac_without_length_in_header(tmp_path: Path, monkeypatch) -> None:
    x = tone(3.0)
    src = write(tmp_path / "src.wav", x, 44100, subtype="PCM_24")
    piped = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(src), "-f", "flac", "-"],
        check=True,
        capture_output=True,
    ).stdout
    path = tmp_path / "streamed.flac"
    path.write_bytes(piped)
    ref = audio.decode(src).samples
    np.testing.assert_array_equal(audio.decode(path).samples, ref)
    no_ffmpeg_path(tmp_path, monkeypatch)
    decoded = audio.decode(path)  # libsndfile: fails at the end instead of a short read
    assert decoded.info.decoder == "soundfile"
    assert ref.shape[1] - decoded.frames <= 1  # libsndfile never yields the last sample
    np.testing.assert_array_equal(decoded.samples, ref[:, : decoded.frames])
    raises_code(ErrorCode.INPUT_TOO_LONG, audio.load, path, Limits(max_seconds=1.0))


def test_input_file_is_not_modified(tmp_path: Path) -> None:
    paths = [
        write(tmp_path / "a.wav", tone(1.0), 44100, subtype="FLOAT"),
        write(tmp_path / "a.flac", tone(1.0), 44100),
    ]
    if HAVE_FFMPEG:
        paths.append(tmp_path / "a.m4a")
        ffmpeg("-i", str(paths[0]), "-c:a", "aac", str(paths[-1]))
    for path in paths:
        before, mtime = sha256(path), path.stat().st_mtime_ns
        audio.load(path)
        assert (sha256(path), path.stat().st_mtime_ns) == (before, mtime)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(q.name for q in paths)


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000, 96000])
@pytest.mark.parametrize("channels", [1, 2])
def test_round_trip_rates_and_channels(tmp_path: Path, sr: int, channels: int) -> None:
    x = tone(0.5, sr=sr, channels=channels)
    path = audio.write_audio(tmp_path / "rt.wav", x, sr)
    decoded = audio.decode(path)
    assert decoded.samplerate == sr and decoded.info.channels == channels
    np.testing.assert_array_equal(decoded.samples, x)
    model_in = audio.to_model_channels(decoded.samples, 2)
    assert model_in.shape == (2, x.shape[1])
    back = audio.from_model_channels(model_in[None], channels)[0]
    np.testing.assert_array_equal(back, x)


# --------------------------------------------------------------------------- channels


def test_mono_becomes_dual_mono_and_back() -> None:
    mono = tone(0.1, channels=1)
    dual = audio.to_model_channels(mono)
    assert dual.shape == (2, mono.shape[1]) and dual.flags.c_contiguous
    np.testing.assert_array_equal(dual[0], dual[1])
    stems = np.stack([dual, 0.5 * dual, np.stack([dual[0], -dual[0]])])  # (3, 2, n)
    back = audio.from_model_channels(stems, 1)
    assert back.shape == (3, 1, mono.shape[1]) and back.dtype == np.float32
    np.testing.assert_allclose(back[0], mono)
    np.testing.assert_allclose(back[2], 0 * mono)  # mean of the two channels


def test_stereo_passes_through_and_too_many_channels_are_refused() -> None:
    stereo = tone(0.1)
    assert audio.to_model_channels(stereo) is stereo
    assert audio.from_model_channels(stereo[None], 2) is not None
    raises_code(ErrorCode.INVALID_ARGUMENT, audio.to_model_channels, tone(0.1, channels=3))
    np.testing.assert_allclose(audio.to_model_channels(stereo, 1)[0], stereo.mean(0))


# --------------------------------------------------------------------------- resampling


@pytest.mark.parametrize(
    ("src", "dst"), [(44100, 48000), (48000, 44100), (44100, 22050), (44100, 32000), (8000, 44100)]
)
def test_resample_is_resample_poly(src: int, dst: int) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3001)).astype(np.float32)
    y = audio.resample(x, src, dst)
    assert y.dtype == np.float32 and y.shape == (2, audio.resampled_length(3001, src, dst))
    np.testing.assert_array_equal(y, resample_poly(x, dst, src, axis=-1))
    y64 = audio.resample(x.astype(np.float64), src, dst)
    assert y64.dtype == np.float32


def test_resample_identity_and_errors() -> None:
    x = np.arange(10, dtype=np.float64)
    y = audio.resample(x, 44100, 44100)
    assert y.dtype == np.float32 and np.array_equal(y, x)
    assert audio.resample(np.zeros((2, 0)), 44100, 48000).shape == (2, 0)
    raises_code(ErrorCode.INVALID_ARGUMENT, audio.resample, x, 0, 48000)


def _random_regions(rng: np.random.Generator, total: int) -> list[tuple[int, int]]:
    """A random tiling of [0, total) with sizes 1, tiny odd ones, ~down and big ones."""
    regions, start = [], 0
    while start < total:
        size = int(rng.choice([1, 2, 3, 7, 146, 147, 148, 441, int(rng.integers(1, 900))]))
        regions.append((start, min(total, start + size)))
        start += size
    return regions


def _run_regions(
    rs: audio.RegionResampler, x: np.ndarray, regions: list[tuple[int, int]]
) -> np.ndarray:
    """Push regions, check the spans tile the output exactly once, return the output."""
    out = np.full(x.shape[:-1] + (rs.total_dst_frames,), np.nan, np.float32)
    hits = np.zeros(rs.total_dst_frames, np.int64)
    for start, stop in regions:
        for dst_start, span in rs.push(start, x[..., start:stop]):
            assert span.dtype == np.float32 and span.shape[:-1] == x.shape[:-1]
            hits[dst_start : dst_start + span.shape[-1]] += 1
            out[..., dst_start : dst_start + span.shape[-1]] = span
    assert rs.done and rs.retained_frames == 0
    assert (hits == 1).all(), "output spans must tile [0, total) exactly once"
    return out


RATE_PAIRS = [
    (44100, 48000),
    (44100, 22050),
    (44100, 96000),
    (44100, 32000),
    (44100, 44100),
    (48000, 44100),
]


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
@pytest.mark.parametrize("lead", [(), (2,), (3, 2)])
@pytest.mark.parametrize("seed", [0, 1])
def test_region_resampler_random_order(src: int, dst: int, lead: tuple, seed: int) -> None:
    rng = np.random.default_rng(seed * 1000 + src + dst + len(lead))
    total = int(rng.integers(700, 4000))
    x = rng.standard_normal(lead + (total,)).astype(np.float32)
    regions = _random_regions(rng, total)
    rng.shuffle(regions)
    rs = audio.RegionResampler(src, dst, total)
    assert rs.total_dst_frames == audio.resampled_length(total, src, dst)
    out = _run_regions(rs, x, regions)
    np.testing.assert_allclose(out, audio.resample(x, src, dst), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
@pytest.mark.parametrize("total", [1, 2, 5, 37])
def test_region_resampler_tiny_signals_one_sample_at_a_time(src: int, dst: int, total: int) -> None:
    rng = np.random.default_rng(total)
    x = rng.standard_normal((2, total)).astype(np.float32)
    regions = [(i, i + 1) for i in rng.permutation(total)]
    out = _run_regions(audio.RegionResampler(src, dst, total), x, regions)
    np.testing.assert_allclose(out, audio.resample(x, src, dst), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("src", "dst"), [(44100, 48000), (44100, 32000)])
def test_region_resampler_play_cursor_order(src: int, dst: int) -> None:
    """Start in the middle (the DAW's cursor), run to the end, then do the beginning."""
    total, size = 20011, 1023
    x = np.random.default_rng(3).standard_normal((4, 2, total)).astype(np.float32)
    starts = list(range(0, total, size))
    cursor = len(starts) // 2
    order = starts[cursor:] + starts[:cursor]
    out = _run_regions(
        audio.RegionResampler(src, dst, total), x, [(s, min(total, s + size)) for s in order]
    )
    np.testing.assert_allclose(out, audio.resample(x, src, dst), rtol=0, atol=1e-5)


def test_region_resampler_emits_early_and_frees_memory() -> None:
    total = 441_000  # 10 s
    x = np.random.default_rng(4).standard_normal((2, total)).astype(np.float32)
    rs = audio.RegionResampler(44100, 48000, total)
    middle = np.array(x[:, 200_000:300_000])
    ref = weakref.ref(middle)
    spans = rs.push(200_000, middle)
    # all but a few dozen frames at each edge of the region are computable right away
    assert len(spans) == 1 and spans[0][1].shape[-1] > 100_000 * 48000 / 44100 - 100
    del middle, spans
    assert ref() is None, "the resampler must not keep pushed regions alive"
    assert 0 < rs.retained_frames < 200
    for start in range(0, 200_000, 50_000):
        rs.push(start, x[:, start : start + 50_000])
        assert rs.retained_frames < 200
    rs.push(300_000, x[:, 300_000:])
    assert rs.done and rs.retained_frames == 0


def test_region_resampler_equal_rates_pass_through() -> None:
    rs = audio.RegionResampler(44100, 44100, 100)
    region = np.ones((2, 60), np.float32)
    [(start, span)] = rs.push(40, region)
    assert start == 40 and np.array_equal(span, region)
    assert rs.push(0, np.zeros((2, 40), np.float32))[0][0] == 0 and rs.done


def test_region_resampler_refuses_bad_regions() -> None:
    rs = audio.RegionResampler(44100, 48000, 1000)
    rs.push(100, np.zeros((2, 100), np.float32))
    raises_code(ErrorCode.INVALID_ARGUMENT, rs.push, 150, np.zeros((2, 100), np.float32))
    raises_code(ErrorCode.INVALID_ARGUMENT, rs.push, 950, np.zeros((2, 100), np.float32))
    raises_code(ErrorCode.INVALID_ARGUMENT, rs.push, -1, np.zeros((2, 1), np.float32))
    raises_code(ErrorCode.INVALID_ARGUMENT, rs.push, 0, np.zeros((3, 10), np.float32))
    assert rs.push(0, np.zeros((2, 0), np.float32)) == []


# --------------------------------------------------------------------------- write_audio


def _temp_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(audio.TEMP_PREFIX + "*"))


def _umask_mode() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def test_write_audio_float_wav_replaces_atomically(tmp_path: Path) -> None:
    target = tmp_path / "out.wav"
    target.write_bytes(b"old contents")
    x = tone(1.0) * 1.5  # float keeps values beyond full scale
    assert audio.write_audio(target, x, 44100) == target
    data, sr = sf.read(str(target), dtype="float32", always_2d=True)
    assert sr == 44100 and sf.info(str(target)).subtype == "FLOAT"
    np.testing.assert_array_equal(data.T, x)
    assert _temp_files(tmp_path) == []
    if os.name == "posix":
        assert target.stat().st_mode & 0o777 == _umask_mode()


@pytest.mark.parametrize(
    ("fmt", "subtype"), [("wav", "PCM_24"), ("flac", None), ("flac", "PCM_24")]
)
def test_write_audio_pcm24(tmp_path: Path, fmt: str, subtype: str | None) -> None:
    x = tone(1.0, amp=0.9)
    x[0, :4] = [1.5, -1.5, np.nan, 1.0]  # clipped to [-1, 1 - 2**-23], NaN -> 0
    path = audio.write_audio(tmp_path / f"out.{fmt}", x, 48000, fmt=fmt, subtype=subtype)
    assert sf.info(str(path)).subtype == "PCM_24"
    got = audio.decode(path).samples
    np.testing.assert_allclose(got[:, 4:], x[:, 4:], rtol=0, atol=2.0**-23)
    np.testing.assert_allclose(got[0, :4], [audio.PCM_MAX, -1.0, 0.0, audio.PCM_MAX], atol=2.0**-23)
    assert _temp_files(tmp_path) == []


def test_write_audio_errors(tmp_path: Path) -> None:
    x = tone(0.1)
    raises_code(
        ErrorCode.INVALID_ARGUMENT, audio.write_audio, tmp_path / "a.mp3", x, 44100, fmt="mp3"
    )
    raises_code(
        ErrorCode.INVALID_ARGUMENT,
        audio.write_audio,
        tmp_path / "a.flac",
        x,
        44100,
        fmt="flac",
        subtype="FLOAT",
    )
    raises_code(ErrorCode.INVALID_ARGUMENT, audio.write_audio, tmp_path / "a.wav", x[0], 44100)
    raises_code(ErrorCode.INVALID_ARGUMENT, audio.write_audio, tmp_path / "a.flac", x[:, :0], 44100)
    err = raises_code(
        ErrorCode.OUTPUT_FAILED, audio.write_audio, tmp_path / "missing" / "a.wav", x, 44100
    )
    assert "Create it" in str(err)


# --------------------------------------------------------------------------- StemFileWriter


def _shuffled_regions(total: int, seed: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    regions = _random_regions(rng, total)
    rng.shuffle(regions)
    return regions


@pytest.mark.parametrize(
    ("fmt", "subtype", "atol"),
    [("wav", None, 0.0), ("wav", "PCM_24", 2.0**-23), ("flac", None, 2.0**-23)],
)
def test_stem_writer_out_of_order(
    tmp_path: Path, fmt: str, subtype: str | None, atol: float
) -> None:
    total = 30011
    x = tone(total / 44100, amp=0.9)
    assert x.shape == (2, total)
    target = tmp_path / f"vocals.{fmt}"
    target.write_bytes(b"previous run")
    with audio.StemFileWriter(tmp_path, total, 2, 44100) as writer:
        assert writer.temp_path.name.startswith(audio.TEMP_PREFIX)
        for start, stop in _shuffled_regions(total, seed=len(fmt) + (subtype is None)):
            writer.write(start, x[:, start:stop])
        assert target.read_bytes() == b"previous run"  # nothing published before commit
        writer.commit(target, fmt=fmt, subtype=subtype)
    got, sr = sf.read(str(target), dtype="float32", always_2d=True)
    assert sr == 44100 and got.shape == (total, 2)
    np.testing.assert_allclose(got.T, x, rtol=0, atol=atol)
    assert _temp_files(tmp_path) == []


def test_stem_writer_unwritten_frames_are_zero_and_other_folder(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with audio.StemFileWriter(tmp_path, 1000, 1, 22050) as writer:
        writer.write(500, np.ones((1, 100), np.float32))
        writer.commit(out_dir / "bass.wav")
    got = audio.decode(out_dir / "bass.wav").samples
    expected = np.zeros((1, 1000), np.float32)
    expected[:, 500:600] = 1
    np.testing.assert_array_equal(got, expected)
    assert _temp_files(tmp_path) == [] and _temp_files(out_dir) == []


def test_stem_writer_abort_and_context_manager(tmp_path: Path) -> None:
    writer = audio.StemFileWriter(tmp_path, 44100, 2, 44100)
    writer.write(0, np.ones((2, 10), np.float32))
    writer.abort()
    writer.abort()  # idempotent
    assert list(tmp_path.iterdir()) == []
    raises_code(ErrorCode.INVALID_ARGUMENT, writer.write, 0, np.ones((2, 10), np.float32))

    with (
        pytest.raises(RuntimeError, match="boom"),
        audio.StemFileWriter(tmp_path, 44100, 2, 44100) as writer,
    ):
        writer.write(0, np.ones((2, 10), np.float32))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []

    with audio.StemFileWriter(tmp_path, 100, 2, 44100):
        pass  # left without commit: nothing is published, nothing is left behind
    assert list(tmp_path.iterdir()) == []


def test_stem_writer_refuses_bad_regions(tmp_path: Path) -> None:
    with audio.StemFileWriter(tmp_path, 100, 2, 44100) as writer:
        raises_code(ErrorCode.INVALID_ARGUMENT, writer.write, 90, np.ones((2, 20), np.float32))
        raises_code(ErrorCode.INVALID_ARGUMENT, writer.write, -1, np.ones((2, 5), np.float32))
        raises_code(ErrorCode.INVALID_ARGUMENT, writer.write, 0, np.ones((1, 5), np.float32))
        raises_code(ErrorCode.INVALID_ARGUMENT, writer.commit, tmp_path / "x.ogg", fmt="ogg")
        writer.commit(tmp_path / "x.wav")
        raises_code(ErrorCode.INVALID_ARGUMENT, writer.commit, tmp_path / "x.wav")
    raises_code(ErrorCode.OUTPUT_FAILED, audio.StemFileWriter, tmp_path / "nope", 10, 2, 44100)
    raises_code(ErrorCode.INVALID_ARGUMENT, audio.StemFileWriter, tmp_path, 0, 2, 44100)


def test_concurrent_writers_use_distinct_temp_files(tmp_path: Path) -> None:
    writers = [audio.StemFileWriter(tmp_path, 100, 2, 44100) for _ in range(4)]
    assert len({w.temp_path for w in writers}) == 4
    for i, writer in enumerate(writers):
        writer.write(0, np.full((2, 100), i / 10, np.float32))
    for i, writer in enumerate(writers):
        writer.commit(tmp_path / f"s{i}.flac", fmt="flac")
    for i in range(4):
        assert abs(audio.decode(tmp_path / f"s{i}.flac").samples.mean() - i / 10) < 1e-6
    assert _temp_files(tmp_path) == []


_KILLED_WRITER = """
import os, sys, numpy as np
sys.path.insert(0, sys.argv[1])
from engine.audio import StemFileWriter
w = StemFileWriter(sys.argv[2], 441000, 2, 44100)
w.write(0, np.ones((2, 44100), np.float32))
print("ready", flush=True)
sys.stdin.readline()
"""


@pytest.mark.skipif(os.name != "posix", reason="uses SIGKILL")
def test_killed_process_leaves_no_partial_output(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(REPO), str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    leftovers = _temp_files(tmp_path)
    assert [p.suffix for p in leftovers] == [".wav"]  # a temp file, never a final one
    assert audio.remove_stale_temp_files(tmp_path, min_age_seconds=3600) == 0
    old = time.time() - 7200
    os.utime(leftovers[0], (old, old))
    assert audio.remove_stale_temp_files(tmp_path, min_age_seconds=3600) == 1
    assert list(tmp_path.iterdir()) == []
