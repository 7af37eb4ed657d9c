"""The server's consolidated job files follow the split's output options (bridge.joboutput
through engine.audio.output): format mp3, bit_depth, sample_rate, normalize; regions stay
at the source's rate, float, unscaled. A real server on loopback, tiny htdemucs, one
separation (the later jobs of the same file are results-cache hits)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from protocol.split import NORMALIZE_CEILING_DB
from tests.bridge.server_helpers import client_of, song, start_server

SR = 44100
STEMS = ("vocals", "drums", "bass", "other")


@pytest.fixture(scope="module")
def server(test_models_dir, tmp_path_factory, one_torch_thread):
    srv = start_server(test_models_dir, tmp_path_factory.mktemp("job-output"))
    yield srv
    srv.stop()


def _run(srv, src: Path, **options) -> tuple[dict, dict]:
    """Split `src` with `options`; the `job/started` and `job/done` payloads."""
    with client_of(srv) as c:
        job = c.split(src, stems=4, model="htdemucs", **options)
        events = dict(c.events(job, timeout=300))
    return events["started"], events["done"]


def _regions(folder: Path, stem: str, frames: int) -> np.ndarray:
    out = np.zeros((frames, 2), np.float32)
    for f in sorted((folder / "regions" / stem).glob("*.wav")):
        start, end = (int(v) for v in f.stem.split("-"))
        data, rate = sf.read(f, dtype="float32", always_2d=True)
        assert rate == SR  # regions at the source's rate
        out[start:end] = data
    return out


def test_job_files_follow_format_depth_rate_and_normalize(server, tmp_path):
    import soxr

    src = tmp_path / "loud.wav"
    song(src, 1.2)
    data, _ = sf.read(src, dtype="float32")
    sf.write(src, 60.0 * data, SR, subtype="FLOAT")  # the tiny model's stems pass 0 dBFS
    started, done = _run(server, src, sample_rate=48000, normalize=True, bit_depth="24")
    assert started["samplerate"] == SR
    folder = Path(started["folder"])
    frames = round(started["frames"] * 48000 / SR)
    out = done["metadata"]["output"]
    assert (out["format"], out["subtype"], out["samplerate"], out["frames"]) == (
        "wav", "PCM_24", 48000, frames)
    gain = out["gain"]
    assert 0 < gain < 1 and out["peak_before_gain"] * gain <= 10 ** (NORMALIZE_CEILING_DB / 20)
    for s in STEMS:
        info = sf.info(done["files"][s])
        assert (info.samplerate, info.frames, info.subtype) == (48000, frames, "PCM_24")
        y = sf.read(done["files"][s], dtype="float32", always_2d=True)[0]
        ref = soxr.resample(_regions(folder, s, started["frames"]), SR, 48000,
                            quality="VHQ")[:frames]
        np.testing.assert_allclose(y[: ref.shape[0]], gain * ref, atol=2e-6)

    started, done = _run(server, src, format="mp3", mp3_quality="v0")
    assert done["metadata"]["cache_hit"]
    assert done["metadata"]["output"] | {"frames": 0} == {
        "format": "mp3", "subtype": "V0", "samplerate": SR, "frames": 0, "gain": 1.0,
        "gain_db": 0.0, "peak_before_gain": None}
    for s in STEMS:
        path = Path(done["files"][s])
        assert path.name == f"{s}.mp3"
        head = path.read_bytes()[:3]
        assert head == b"ID3" or (head[0] == 0xFF and head[1] & 0xE0 == 0xE0)
        info = sf.info(path)
        assert info.samplerate == SR and info.format == "MP3"

    started, done = _run(server, src, format="flac", bit_depth="16", sample_rate=44100)
    for s in STEMS:
        info = sf.info(done["files"][s])
        assert (info.format, info.subtype, info.samplerate) == ("FLAC", "PCM_16", SR)
