"""The preview's plain-Python stages, without pyo: the controls and their OSC messages
(`bridge.preview.controls`), the control socket over real UDP on loopback (`osc`), the
terminal keys on a real pseudo-terminal (`keys`), automation files (`automation`), the
play report (`report`), the crossfade decision (`crossfade`), the server address and
exit statuses of the command (`job`, `command`).

Nothing here needs pyo, and the last test proves it: it runs this whole file again in a
Python where ``import pyo`` fails.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from types import SimpleNamespace

import pytest

from bridge.preview.automation import due, read_automation
from bridge.preview.command import client_exit_status
from bridge.preview.controls import Controls
from bridge.preview.crossfade import Fader, lookahead, ramp_frames, source_target
from bridge.preview.job import server_address
from bridge.preview.keys import KeyControl, split_keys
from bridge.preview.osc import PreviewOscServer
from bridge.preview.report import PlayReport, clock
from engine.errors import InvalidArgumentError
from protocol.errors import EXIT_NO_SERVER, EXIT_SERVER_ERROR, ErrorCode
from protocol.messages import Address, Message, ProtocolError, decode, encode, unpack
from protocol.messages import PreviewAddress as P

ROOT = Path(__file__).resolve().parents[2]
SR = 48000
STEMS = ("vocals", "drums", "bass", "other")
FRAMES = 3 * SR  # a 3 s song


def _controls(**kw) -> Controls:
    return Controls(STEMS, FRAMES, SR, **kw)


class Peer:
    """A control surface: one UDP socket on loopback talking to the preview."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5.0)

    def send(self, address: str, *args) -> None:
        self.sock.sendto(encode(address, *args), self.target)

    def receive(self) -> Message:
        return decode(self.sock.recvfrom(70000)[0])

    def status(self) -> dict:
        """Ask for the status; its answer also proves that everything sent before was
        handled (one socket, handled in order)."""
        self.send(P.STATUS)
        msg = self.receive()
        assert msg.address == P.STATUS_REPLY
        return unpack(msg.args[0])

    def error(self, address: str, *args) -> dict:
        self.send(address, *args)
        msg = self.receive()
        assert msg.address == Address.ERROR, msg
        return unpack(msg.args[0])


# --------------------------------------------------------------------------- controls


def test_controls_set_gains_mutes_and_solos_and_log_each_change():
    c = _controls()
    assert c.take_changes() == (None, [])  # nothing changed yet
    c.handle(Message(P.GAIN, ("drums", -6.0)))
    c.handle(Message(P.GAIN_LINEAR, (4, 0.5)))  # by number, 1-based
    gains, log = c.take_changes()
    assert gains == pytest.approx([1.0, 10 ** (-6 / 20), 1.0, 0.5])
    assert log == ["gain drums -6.0 dB", "gain other -6.0 dB"]
    assert c.take_changes() == (None, [])  # taken
    c.handle(Message(P.SOLO, ("bass", True)))
    c.handle(Message(P.MUTE, ("bass",)))  # no flag: toggle; mute wins over solo
    gains, log = c.take_changes()
    assert gains == [0.0, 0.0, 0.0, 0.0] and log == ["solo bass on", "mute bass on"]
    c.handle(Message(P.MUTE, ("bass", 0.0)))  # f 0: off
    c.handle(Message(P.GAIN_LINEAR, ("vocals", 0)))
    assert c.effective() == [0.0, 0.0, 1.0, 0.0]
    state = c.state()
    assert state["gain_db"][0] is None and state["gain_db"][1] == pytest.approx(-6.0)
    assert state["solo"] == [False, False, True, False]
    c.handle(Message(P.KARAOKE, ()))
    assert c.state()["mute"] == [True, False, False, False]
    c.handle(Message(P.RESET, (0,)))  # a button's release: nothing
    assert c.state()["mute"] == [True, False, False, False]
    c.handle(Message(P.RESET, ()))
    gains, log = c.take_changes()
    assert gains == [1.0] * 4 and log[-2:] == ["karaoke on", "reset"]
    assert c.state() == {"playing": True, "stems": list(STEMS), "gain": [1.0] * 4,
                         "gain_db": [0.0] * 4, "mute": [False] * 4, "solo": [False] * 4}


def test_refused_controls_raise_their_wire_code_and_change_nothing():
    c = _controls()
    before = c.state()
    for msg, code, words in (
            (Message("/stembridge/preview/mutee", ("vocals",)), ErrorCode.UNKNOWN_ADDRESS,
             "the preview accepts"),
            (Message(P.GAIN, ("vocals", 20.0)), ErrorCode.INVALID_ARGUMENT, "[-96 dB, +12 dB]"),
            (Message(P.GAIN_LINEAR, ("vocals", 5)), ErrorCode.INVALID_ARGUMENT, "[0, 4]"),
            (Message(P.MUTE, ("voice", 1)), ErrorCode.INVALID_ARGUMENT,
             "vocals, drums, bass, other"),
            (Message(P.MUTE, (5,)), ErrorCode.INVALID_ARGUMENT, "1..4"),
            (Message(P.MUTE, ("vocals", "yes")), ErrorCode.INVALID_ARGUMENT, "on/off"),
            (Message(P.GAIN, ("vocals",)), ErrorCode.BAD_MESSAGE, "takes 2 arguments"),
            (Message(P.SEEK, (3.0,)), ErrorCode.INVALID_ARGUMENT, "[0, 3.000) s"),
            (Message(P.SEEK, (float("inf"),)), ErrorCode.INVALID_ARGUMENT, "finite"),
            (Message(P.STATUS, (0,)), ErrorCode.INVALID_ARGUMENT, "reply port"),
            (Message(P.STATUS, (True,)), ErrorCode.INVALID_ARGUMENT, "reply port")):
        with pytest.raises(ProtocolError, match=re.escape(words)) as info:
            c.check(msg)
        assert info.value.code == code, msg
        with pytest.raises(ProtocolError):
            c.handle(msg)
    with pytest.raises(ProtocolError, match="'vocals'") as info:
        Controls(("drums", "bass"), FRAMES, SR).handle(Message(P.KARAOKE, ()))
    assert info.value.code == ErrorCode.INVALID_ARGUMENT
    assert c.state() == before and c.take_changes() == (None, [])


def test_transport_requests_are_taken_once_and_are_news_at_the_next_block():
    c = _controls()
    assert c.pending() == (None, True)  # a preview starts playing
    c.handle(Message(P.STOP, (1,)))
    c.handle(Message(P.SEEK, (2,)))  # i seconds
    # without any gain change, the log still reaches the next block
    assert c.take_changes() == ([1.0] * 4, ["stop", "seek 2.000 s"])
    assert c.pending() == (2 * SR, False) and not c.playing
    assert c.take_transport() == (2 * SR, False)
    assert c.take_transport() == (None, False)  # the seek was taken
    c.handle(Message(P.PLAY, ()))
    assert c.take_transport(at_end=True) == (None, False)  # at the end: nothing to play
    c.handle(Message(P.PLAY, ()))
    c.handle(Message(P.SEEK, (0.5,)))
    assert c.take_transport(at_end=True) == (SR // 2, True)  # a seek away from the end plays
    c.ended()
    assert not c.playing


def test_status_reply_comes_from_the_given_status():
    c = _controls(status=lambda: {"position": 1.5})
    assert c.handle(Message(P.STATUS, ())) == Message(P.STATUS_REPLY, ({"position": 1.5},))
    assert _controls().handle(Message(P.STATUS, (9000,))).args[0]["stems"] == list(STEMS)


# --------------------------------------------------------------------------- OSC over UDP


def test_osc_refuses_what_it_does_not_know_and_changes_nothing():
    controls = _controls()
    osc = PreviewOscServer(0).start(controls.handle)
    peer = Peer(osc.address)
    try:
        before = peer.status()
        assert peer.error("/stembridge/preview/mutee", "vocals")["code"] == "unknown_address"
        assert peer.error(Address.SPLIT, b"\x80")["code"] == "unknown_address"
        err = peer.error(P.GAIN, "vocals", 20.0)
        assert err["code"] == "invalid_argument" and "[-96 dB, +12 dB]" in err["message"]
        err = peer.error(P.MUTE, "voice", 1)
        assert err["code"] == "invalid_argument"
        assert "vocals, drums, bass, other" in err["message"]
        assert peer.error(P.MUTE, "vocals", "yes")["code"] == "invalid_argument"
        assert peer.error(P.GAIN, "vocals")["code"] == "bad_message"
        assert peer.error(P.SEEK, 3.5)["code"] == "invalid_argument"  # past the end
        assert peer.error(P.SEEK, float("nan"))["code"] == "invalid_argument"
        peer.sock.sendto(b"not OSC at all!!", osc.address)
        err = unpack(peer.receive().args[0])
        assert err == {"job": "", "request_id": -1, "code": "bad_message",
                       "message": err["message"]}
        after = peer.status()
        assert {k: after[k] for k in ("gain", "mute", "solo", "playing")} == \
            {k: before[k] for k in ("gain", "mute", "solo", "playing")}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.settimeout(5.0)
            peer.send(P.STATUS, listener.getsockname()[1])  # reply_port
            assert decode(listener.recvfrom(70000)[0]).address == P.STATUS_REPLY
        assert osc.errors == 9
    finally:
        osc.stop()
        peer.sock.close()


def test_osc_binds_loopback_never_answers_answers_and_reports_internal_errors():
    def broken() -> dict:
        raise RuntimeError("status is broken")

    controls = _controls(status=broken)
    osc = PreviewOscServer(0).start(controls.handle)
    peer = Peer(osc.address)
    try:
        assert osc.address[0] == "127.0.0.1"
        peer.send(Address.ERROR, b"\x80")  # an answer: dropped unanswered
        peer.send(P.STATUS_REPLY, b"\x80")  # likewise
        peer.send(P.MUTE, "drums", 1)  # no reply either, but applied
        err = peer.error(P.STATUS)  # a bug in the handler: answered, the loop goes on
        assert err["code"] == "internal" and "bug" in err["message"]
        assert peer.error(P.SEEK, -1.0)["code"] == "invalid_argument"
        assert controls.state()["mute"] == [False, True, False, False]
        assert osc.received == 5 and osc.errors == 2
    finally:
        osc.stop()
        peer.sock.close()


# --------------------------------------------------------------------------- keys


def test_terminal_keys_become_controls():
    pty = pytest.importorskip("pty")
    controls = _controls()
    news: deque[str] = deque()
    master, slave = pty.openpty()
    quit_event = threading.Event()
    with os.fdopen(slave, "rb", buffering=0) as tty:
        keys = KeyControl(controls, quit_event, tty, position=lambda: 0.01, news=news).start()
        try:
            os.write(master, b"2 \x1b[C")  # mute drums, stop, seek +5 s (past the end: clamped)
            deadline = time.monotonic() + 5
            log: list[str] = []
            while len(log) < 3 and time.monotonic() < deadline:
                log += controls.take_changes()[1]
                time.sleep(0.01)
            assert controls.state()["mute"] == [False, True, False, False]
            assert not controls.playing
            os.write(master, b"q")
            assert quit_event.wait(5)
        finally:
            keys.stop()
        os.close(master)
    assert "mute drums on" in log and "stop" in log
    assert "seek 3.000 s" in log  # +5 s from 0.01 s, clamped to the last frame
    assert not news


def test_keys_map_to_messages_and_refusals_become_news():
    controls = Controls(("vocals", "instrumental"), FRAMES, SR)
    news: deque[str] = deque()
    keys = KeyControl(controls, threading.Event(), position=lambda: 4.0, news=news)
    assert split_keys(b"1\x1b[D \x1b[Cx") == [b"1", b"\x1b[D", b" ", b"\x1b[C", b"x"]
    assert keys.message(b"1") == Message(P.MUTE, (1,))
    assert keys.message(b"3") is None  # only two stems
    assert keys.message(b"\x1b[D") == Message(P.SEEK, (0.0,))  # clamped at the start
    assert keys.message(b" ") == Message(P.STOP, ())
    keys.press(b" ")
    assert keys.message(b" ") == Message(P.PLAY, ())
    assert keys.message(b"x") is None and not keys.quit.is_set()
    keys.position = lambda: 1.0
    keys.press(b"\x1b[C")
    assert controls.take_changes()[1] == ["stop", f"seek {(FRAMES - 1) / SR:.3f} s"]
    small = Controls(("vocals", "instrumental"), 100, SR)  # shorter than one frame's seek
    KeyControl(small, threading.Event(), position=lambda: -1.0, news=news).press(b"\x1b[D")
    assert small.take_changes()[1] == ["seek 0.000 s"] and not news
    keys.message(b"Q")
    assert keys.quit.is_set()


def test_keys_without_a_terminal_read_nothing():
    with open(os.devnull, "rb") as stream:
        keys = KeyControl(_controls(), threading.Event(), stream=stream)
        try:
            assert keys.start() is keys and keys._thread is None
        finally:
            keys.stop()


# --------------------------------------------------------------------------- automation


def test_automation_file_is_read_with_wire_types_and_checked(tmp_path):
    good = tmp_path / "cues.jsonl"
    good.write_text("# karaoke from 1.5 s\n\n"
                    '{"t": 2.0, "address": "/stembridge/preview/gain", "args": ["drums", -6]}\n'
                    '{"t": 1.5, "address": "/stembridge/preview/karaoke", "args": [true]}\n'
                    '{"t": 3, "address": "/stembridge/preview/seek", "args": [10.25]}\n',
                    encoding="utf-8")
    cues = read_automation(good)
    assert [(c.t, c.line) for c in cues] == [(1.5, 4), (2.0, 3), (3.0, 5)]
    assert cues[1].message == Message(P.GAIN, ("drums", -6))  # JSON integer -> OSC i
    assert cues[2].message.args == (10.25,)
    for line, words in (('{"t": 1, "address": "/stembridge/preview/mutee", "args": []}',
                         "unknown address"),
                        ('{"t": -1, "address": "/stembridge/preview/play"}', "seconds >= 0"),
                        ('{"t": 1, "address": "/stembridge/preview/mute", "args": ["bass", '
                         '10000000000]}', "int32"),
                        ("{t: 1}", "not JSON"),
                        ('{"t": 1, "address": "/stembridge/preview/status"}', "unknown"),
                        ('{"t": 1, "address": "/stembridge/preview/play", "args": 1}',
                         "must be a list")):
        bad = tmp_path / "bad.jsonl"
        bad.write_text("# header\n" + line + "\n", encoding="utf-8")
        with pytest.raises(InvalidArgumentError, match=words) as info:
            read_automation(bad)
        assert f"{bad}:2" in str(info.value)
    with pytest.raises(InvalidArgumentError, match="Cannot read"):
        read_automation(tmp_path / "missing.jsonl")


def test_cues_fall_due_at_the_first_block_starting_at_or_after_their_time(tmp_path):
    path = tmp_path / "cues.jsonl"
    path.write_text("".join(f'{{"t": {t}, "address": "/stembridge/preview/play"}}\n'
                            for t in (0, 0.1, 0.1, 0.25)), encoding="utf-8")
    pending = deque(read_automation(path))
    assert [c.line for c in due(pending, 0.0)] == [1]
    assert due(pending, 0.05) == []
    assert [c.line for c in due(pending, 0.1)] == [2, 3]  # ties in file order
    assert [c.line for c in due(pending, 10.0)] == [4] and not pending


# --------------------------------------------------------------------------- report, crossfade


def test_report_counts_fallbacks_and_merges_contiguous_blocks():
    rep = PlayReport(SR, 256, 0.02, list(STEMS))
    for k, (target, mode) in enumerate([(0.0, "fade"), (0.0, "mixture"), (0.0, "mixture"),
                                        (1.0, "fade"), (1.0, "stems"), (0.0, "mixture")]):
        rep.count(target, k * 256, 1000 + k * 256)
        rep.mark(mode, k * 256, 1000 + k * 256)
    rep.restart()
    rep.count(0.0, 6 * 256, 50000)  # after a seek: the mixture is news again
    rep.mark("mixture", 6 * 256, 50000)  # not contiguous in the song: a new run
    rep.mark("silent", 7 * 256, None)
    d = rep.as_dict(8 * 256)
    assert d["fallback"] == {"count": 3, "seconds": 5 * 256 / SR}
    assert d["played_s"] == 7 * 256 / SR and d["stems_s"] == 2 * 256 / SR
    assert d["first_stems_s"] == 3 * 256 / SR and d["output_s"] == 8 * 256 / SR
    assert [(r["mode"], r["out_start"], r["out_end"], r["src_start"]) for r in d["timeline"]] == [
        ("fade", 0, 256, 1000), ("mixture", 256, 768, 1256), ("fade", 768, 1024, 1768),
        ("stems", 1024, 1280, 2024), ("mixture", 1280, 1536, 2280),
        ("mixture", 1536, 1792, 50000), ("silent", 1792, 2048, None)]
    assert [e["what"][:7] for e in d["events"]] == ["mixture", "stems", "mixture", "mixture"]
    assert rep.status()["mode"] == "silent" and rep.fault is None
    rep.fail(ValueError("first"))
    rep.fail(ValueError("second"))
    assert rep.fault == "ValueError: first" and rep.news[-1].endswith("ValueError: first")
    assert clock(65.25) == "1:05.250"


def test_stems_play_only_where_final_far_enough_ahead_and_fades_settle():
    n, rf = 256, ramp_frames(0.02, SR)
    assert rf == 961 and lookahead(n, rf) == 2 * n + 961
    ahead = lookahead(n, rf)
    assert source_target(ahead, ahead, 10 ** 6) == 1.0
    assert source_target(ahead - 1, ahead, 10 ** 6) == 0.0
    assert source_target(100, ahead, 100) == 1.0  # final through the end of the song
    assert source_target(0, ahead, 100) == 0.0
    xf, master = SimpleNamespace(value=0.0, time=0.02), SimpleNamespace(value=0.0, time=0.02)
    fader = Fader(xf, master, 0.02, rf)
    assert fader.mode(0) == "fade"  # faded out
    fader.crossfade(1.0, 0, instant=True)
    fader.fade(1.0, 0)
    assert (xf.value, xf.time, master.value) == (1.0, 0.0, 1.0)
    fader.begin_block()
    assert xf.time == 0.02  # the instant jump lasted one block
    assert fader.fading(rf - 1) and not fader.fading(rf) and fader.mode(rf) == "stems"
    fader.crossfade(0.0, 5000)
    assert fader.crossfading(5000 + rf - 1) and fader.mode(5000 + rf - 1) == "fade"
    assert not fader.crossfading(5000 + rf) and fader.mode(5000 + rf) == "mixture"


# --------------------------------------------------------------------------- command


def test_the_server_is_named_by_flags_else_environment_else_discovery(monkeypatch):
    monkeypatch.delenv("STEMBRIDGE_HOST", raising=False)
    monkeypatch.delenv("STEMBRIDGE_PORT", raising=False)
    assert server_address(None, None) is None  # discovery (and start) as before
    assert server_address(None, 47900) == ("127.0.0.1", 47900)
    assert server_address("10.0.0.2", None) == ("10.0.0.2", 47800)
    monkeypatch.setenv("STEMBRIDGE_PORT", "47901")  # read at call time
    assert server_address(None, None) == ("127.0.0.1", 47901)
    monkeypatch.setenv("STEMBRIDGE_HOST", "::1")
    assert server_address(None, 5) == ("::1", 5)


def test_client_errors_exit_with_the_tables_status():
    for code in (ErrorCode.TIMEOUT, ErrorCode.NOT_RUNNING, ErrorCode.START_FAILED):
        assert client_exit_status(code.value) == EXIT_NO_SERVER
    for code in ("bad_message", "unauthorized", "too_many_jobs", "input_missing", "error",
                 "a code from a newer server"):
        assert client_exit_status(code) == EXIT_SERVER_ERROR


# --------------------------------------------------------------------------- without pyo


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **env}, timeout=300)


def test_preview_help_imports_neither_pyo_nor_torch():
    res = _python("import contextlib, io, sys, bridge.cli\n"
                  "out = io.StringIO()\n"
                  "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
                  "    bridge.cli.main(['preview', '--help'])\n"
                  "assert '--port' in out.getvalue() and '--token' in out.getvalue()\n"
                  "print([m for m in ('pyo', 'torch', 'numpy') if m in sys.modules])")
    assert res.returncode == 0 and res.stdout.strip().splitlines()[-1] == "[]", \
        res.stdout + res.stderr


def test_without_pyo_the_preview_says_how_to_install_it():
    res = _python("import sys; sys.modules['pyo'] = None\n"
                  "from bridge import preview\n"
                  "from engine.errors import DeviceError\n"
                  "try:\n"
                  "    preview.check_audio_device('manual')\n"
                  "except DeviceError as err:\n"
                  "    print(err.exit_code, err)\n")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("9 ") and "pip install 'stembridge[preview]'" in res.stdout


def test_this_file_passes_where_pyo_cannot_be_imported():
    if os.environ.get("STEMBRIDGE_TEST_NO_PYO"):
        pytest.skip("this run is the one without pyo")
    res = _python("import sys; sys.modules['pyo'] = None\n"
                  "import pytest\n"
                  f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', {__file__!r}]))",
                  STEMBRIDGE_TEST_NO_PYO="1")
    assert res.returncode == 0, res.stdout + res.stderr
    assert " passed" in res.stdout and "1 skipped" in res.stdout, res.stdout
