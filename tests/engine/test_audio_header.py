"""engine.audio.header: probing a file's header, refusing what is missing, not audio, or
needs a decoder that is not installed.

Every input is a real file built here (no mocks of soundfile or ffmpeg); ffmpeg-only cases
are skipped when ffmpeg is not installed. A missing ffmpeg is simulated by pointing PATH at
an empty folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine import audio
from protocol.errors import ErrorCode
from tests.audio_helpers import (
    aligned_snr_db,
    ffmpeg,
    needs_ffmpeg,
    no_ffmpeg_path,
    raises_code,
    tone,
    write,
)


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


def test_zero_byte_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "zero.wav"
    path.touch()
    err = raises_code(ErrorCode.INPUT_EMPTY, audio.load, path)
    assert "0 bytes" in str(err) and "again" in str(err)


@needs_ffmpeg
def test_m4a_cut_before_its_index_is_corrupt(tmp_path: Path) -> None:
    src = write(tmp_path / "src.wav", tone(2.0), 44100)
    m4a = tmp_path / "full.m4a"
    ffmpeg("-i", str(src), "-c:a", "aac", str(m4a))  # index ("moov") at the end
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(m4a.read_bytes()[: m4a.stat().st_size - 200])
    raises_code(ErrorCode.INPUT_CORRUPT, audio.load, cut)


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
