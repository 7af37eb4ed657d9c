"""engine.audio.decoder: decoding every supported format to float32 (channels, frames),
and damage that only shows while decoding.

Every input is a real file built here (no mocks of soundfile or ffmpeg); ffmpeg-only cases
are skipped when ffmpeg is not installed. A missing ffmpeg is simulated by pointing PATH at
an empty folder.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from engine import audio
from engine.config import Limits
from protocol.errors import ErrorCode
from tests.audio_helpers import (
    HAVE_FFMPEG,
    can_write_mp3,
    ffmpeg,
    needs_ffmpeg,
    no_ffmpeg_path,
    raises_code,
    sha256,
    snr_db,
    tone,
    write,
)


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.95])
def test_truncated_flac_is_corrupt(tmp_path: Path, fraction: float) -> None:
    # libsndfile opens it and reports the header's length; reading fails at the cut.
    full = write(tmp_path / "full.flac", tone(2.0), 44100, subtype="PCM_24")
    cut = tmp_path / "cut.flac"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * fraction)])
    err = raises_code(ErrorCode.INPUT_CORRUPT, audio.load, cut)
    assert "again" in str(err)


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
    err = raises_code(ErrorCode.INPUT_TOO_LONG, audio.load, path, Limits(max_seconds=1.0))
    assert "longer than the limit of 1.0 s" in str(err)  # the header told no length


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
