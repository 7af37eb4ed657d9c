"""The server's `master` request over real UDP on loopback: accepted, progress, done with
the file and the analysis; refusals; cancel."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import soundfile as sf

from bridge.server import StembridgeServer
from protocol.messages import (
    Accepted,
    Address,
    Cancel,
    ErrorMsg,
    JobSummary,
    MasterDone,
    MasterRequest,
    Progress,
    Status,
    decode,
)
from tests.bridge.server_helpers import song, start_server


@pytest.fixture(scope="module")
def server(test_models_dir, tmp_path_factory):
    srv = start_server(test_models_dir, tmp_path_factory.mktemp("master-server"))
    yield srv
    srv.stop()


class Peer:
    """A bare UDP peer: sends requests, collects whatever comes back."""

    def __init__(self, srv: StembridgeServer) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.server = srv.address

    def send(self, msg) -> None:
        self.sock.sendto(msg.encode(), self.server)

    def until(self, address: str, timeout: float = 60.0) -> list:
        got, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                msg = decode(self.sock.recv(70000))
            except TimeoutError:
                break
            got.append(msg)
            if msg.address in (address, Address.ERROR):
                return got
        raise AssertionError(f"no {address} within {timeout} s: {got}")


def test_master_request_end_to_end(server, tmp_path):
    src = song(tmp_path / "mix.wav", 4.0)
    peer = Peer(server)
    peer.send(MasterRequest(source=str(src), preset="loud", format="flac", bit_depth="16",
                            request_id=5))
    msgs = peer.until(Address.MASTER_DONE)
    accepted = Accepted.from_message(msgs[0])
    assert msgs[0].address == Address.ACCEPTED and accepted.request_id == 5
    progress = [Progress.from_message(m) for m in msgs if m.address == Address.PROGRESS]
    assert progress and progress[-1].regions_done <= 100
    assert msgs[-1].address == Address.MASTER_DONE, msgs[-1]
    done = MasterDone.from_message(msgs[-1])
    assert done.job == accepted.job
    out = Path(done.file)
    assert out.parent == Path(accepted.folder) and out.name == "mix.master.flac"
    assert sf.info(str(out)).subtype == "PCM_16"
    assert done.lufs_after == pytest.approx(-8.0, abs=0.3)
    assert done.true_peak_after <= -1.0 and done.passes >= 1
    report = json.loads(Path(done.report).read_text())
    assert report["output_analysis"]["loudness"]["integrated_lufs"] == done.lufs_after
    assert src.read_bytes()  # the input is untouched and still there
    peer.send(Status(accepted.job))
    summary = JobSummary.from_message(peer.until(Address.STATUS_REPLY)[-1])
    assert summary.state == "done" and summary.regions_done == 100


def test_master_refusals(server, tmp_path):
    peer = Peer(server)
    peer.send(MasterRequest(source=str(tmp_path / "missing.wav"), request_id=1))
    err = ErrorMsg.from_message(peer.until(Address.MASTER_DONE)[-1])
    assert err.code.value == "input_missing" and err.request_id == 1
    peer.send(MasterRequest(source="relative.wav", request_id=2))
    assert ErrorMsg.from_message(peer.until(Address.MASTER_DONE)[-1]).code.value == \
        "invalid_argument"
    src = song(tmp_path / "a.wav", 1.0)
    peer.send(MasterRequest(source=str(src), output_root="../../etc", request_id=3))
    assert ErrorMsg.from_message(peer.until(Address.MASTER_DONE)[-1]).code.value == \
        "invalid_argument"
    peer.send(MasterRequest(source=str(src), amount=2.0, request_id=4))
    assert ErrorMsg.from_message(peer.until(Address.MASTER_DONE)[-1]).code.value == \
        "invalid_argument"


def test_master_cancel(server, tmp_path):
    src = song(tmp_path / "long.wav", 30.0)
    peer = Peer(server)
    peer.send(MasterRequest(source=str(src), request_id=9))
    accepted = Accepted.from_message(peer.until(Address.ACCEPTED)[-1])
    peer.send(Cancel(accepted.job))
    # a job still queued is failed at once: its `error` (cancelled) push to the requester
    # may come before the cancel's status reply
    msgs = peer.until(Address.STATUS_REPLY, timeout=30)
    if msgs[-1].address == Address.ERROR:
        assert ErrorMsg.from_message(msgs[-1]).code.value == "cancelled"
        msgs += peer.until(Address.STATUS_REPLY, timeout=30)
    summaries = [JobSummary.from_message(m) for m in msgs if m.address == Address.STATUS_REPLY]
    assert summaries and summaries[-1].job == accepted.job
    # the job ends cancelled and writes no master
    deadline = time.monotonic() + 30
    while server.masters.jobs[accepted.job].state in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert server.masters.jobs[accepted.job].state == "cancelled"
    assert not list(Path(accepted.folder).glob("*.master.wav"))
