"""The protocol's JSON files (`protocol.jobfiles`): request and reply files of
`submit --request`, the job manifest, the discovery record."""

from __future__ import annotations

import json

import pytest

from protocol.jobfiles import (
    DiscoveryRecord,
    Manifest,
    ManifestRegion,
    ReplyFile,
    RequestFile,
)
from protocol.messages import JobError, ProtocolError, SplitRequest

SONG = "/home/user/Music/song.wav"


def test_request_file_carries_every_split_option_and_the_device():
    body = {"source": SONG, "stems": 4, "model": "htdemucs", "start_at": 12,
            "section_start": 1.5, "section_length": 30.0, "priority": "batch",
            "format": "flac", "shm": True, "overlap": 0.5, "output_root": "album",
            "token": "t", "device": "cpu", "client": "reaper"}
    req = RequestFile.from_payload(body)
    assert req.device == "cpu"
    assert req.split == SplitRequest(SONG, stems=4, model="htdemucs", start_at=12.0,
                                     section_start=1.5, section_length=30.0,
                                     priority="batch", format="flac", shm=True,
                                     overlap=0.5, output_root="album", token="t")
    assert RequestFile.from_payload(req.to_payload()) == req
    assert "client" not in req.to_payload() and "request_id" not in req.to_payload()


def test_request_file_defaults_as_the_reaper_scripts_write_them():
    req = RequestFile.from_payload({"source": SONG, "stems": 0, "model": "",
                                    "request_id": 99, "reply_port": 5})
    assert req.split == SplitRequest(SONG) and req.device is None
    assert req.split.request_id == 0 and req.split.reply_port is None


@pytest.mark.parametrize("body,code", [
    ([SONG], "bad_message"), ({"stems": 2}, "bad_message"), ({"source": 5}, "bad_message"),
    ({"source": SONG, "stems": "4"}, "bad_message"), ({"source": SONG, "device": 1},
                                                      "bad_message"),
    ({"source": SONG, "stems": 3}, "invalid_argument"),
    ({"source": SONG, "format": "ogg"}, "invalid_argument"),
        ({"source": SONG, "format": "mp3", "bit_depth": "24"}, "invalid_argument"),
        ({"source": SONG, "sample_rate": 96000}, "invalid_argument"),
    ({"source": SONG, "start_at": -1}, "invalid_argument"),
])
def test_request_file_rejects(body, code):
    with pytest.raises(ProtocolError) as err:
        RequestFile.from_payload(body)
    assert err.value.code == code


def test_reply_file_states():
    launched = ReplyFile("launched", 42)
    assert launched.to_payload() == {"state": "launched", "pid": 42}
    accepted = ReplyFile("accepted", 42, job="j", folder="/f", manifest="/f/manifest.json")
    assert ReplyFile.from_payload(accepted.to_payload()) == accepted
    error = ReplyFile("error", 42, code="input_missing", message="m")
    assert error.to_payload() == {"state": "error", "pid": 42, "code": "input_missing",
                                  "message": "m"}
    with pytest.raises(ProtocolError, match="state"):
        ReplyFile.from_payload({"state": "exploded", "pid": 1})


def test_manifest_round_trips_and_hides_the_token():
    request = SplitRequest(SONG, stems=2, token="secret", request_id=7)
    manifest = Manifest(job="j", source=SONG, request=request, state="running", updated=5.0,
                        regions=[ManifestRegion(0, 10, {"vocals": "regions/vocals/a.wav"})],
                        stems=["vocals", "instrumental"], samplerate=44100, channels=2,
                        frames=10, source_stat=[3, 4])
    data = json.loads(json.dumps(manifest.to_payload()))
    assert data["request"]["token"] is None and data["final"] is None
    assert data["protocol"] == 1 and list(data["regions"][0]) == ["start", "end", "files"]
    back = Manifest.from_payload(data)
    assert back.request.token is None and back.regions == manifest.regions
    assert back.resumable and not Manifest.from_payload(data | {"state": "done"}).resumable
    failed = Manifest.from_payload(data | {"state": "failed",
                                           "error": {"code": "internal", "message": "x"}})
    assert failed.error == JobError("internal", "x")


def test_manifest_of_the_first_server_version_still_loads():
    """A manifest as the server wrote it before the types existed (recovery reads it)."""
    old = {"protocol": 1, "job": "20261121-120000-0a1b2c3d", "source": SONG,
           "request": {"request_id": 7, "source": SONG, "stems": 4, "token": None},
           "regions": [{"start": 0, "end": 441000, "files": {"vocals": "r/v.wav"}}],
           "final": None, "state": "running", "updated": 1.5, "stems": ["vocals"],
           "samplerate": 44100, "channels": 2, "frames": 882000,
           "source_stat": [1234, 5678]}
    manifest = Manifest.from_payload(old)
    assert manifest.request.stems == 4 and manifest.regions[0].end == 441000
    assert manifest.resumable


def test_discovery_record():
    minimal = DiscoveryRecord.from_payload({"host": "127.0.0.1", "port": 47800, "pid": 0})
    assert minimal.token_required is False and minimal.protocol == 1
    full = DiscoveryRecord("127.0.0.1", 47800, 12, "0.1.0", 1, 2.5, True, "/jobs")
    assert DiscoveryRecord.from_payload(full.to_payload()) == full
    with pytest.raises(ProtocolError, match="port"):
        DiscoveryRecord.from_payload({"host": "127.0.0.1"})
