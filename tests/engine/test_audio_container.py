"""engine.audio.container: files visibly cut short, found from their bytes before any
decoder quietly reads what is left of them.

Every input is a real file built here (no mocks of soundfile or ffmpeg); ffmpeg-only cases
are skipped when ffmpeg is not installed. A missing ffmpeg is simulated by pointing PATH at
an empty folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from engine import audio
from protocol.errors import ErrorCode
from tests.audio_helpers import raises_code, tone, write


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


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.9, 0.99])
def test_truncated_ogg_is_corrupt(tmp_path: Path, fraction: float) -> None:
    full = write(tmp_path / "full.ogg", tone(2.0), 44100, format="OGG", subtype="VORBIS")
    cut = tmp_path / "cut.ogg"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * fraction)])
    err = raises_code(ErrorCode.INPUT_CORRUPT, audio.load, cut)
    assert "truncated" in str(err)
