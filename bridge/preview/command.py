"""``stembridge preview``: the command line (`add_parser`, `run`) and the session that
ties the job, the player, the control socket and the keys or the render together.

Exit statuses come from `protocol.errors` (README, "Exit codes"): an engine error's own,
`EXIT_NO_SERVER` when no server answers, `EXIT_SERVER_ERROR` when it refused, 130 when
interrupted. Nothing heavy is imported until `run`.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.preview.automation import Cue, read_automation, render
from bridge.preview.device import boot_server, check_audio_device
from bridge.preview.job import JobFollower, connect, finish_job, server_address
from bridge.preview.keys import KeyControl
from bridge.preview.osc import HOST, PreviewOscServer
from bridge.preview.report import clock, summary, summary_line
from protocol.errors import EXIT_NO_SERVER, EXIT_SERVER_ERROR, ErrorCode, exit_status, hint
from protocol.settings import DEFAULT_PREVIEW_PORT

if TYPE_CHECKING:
    from bridge.preview.player import PreviewPlayer

#: Exit status of an interrupted preview (Ctrl-C), as for a cancelled split.
EXIT_INTERRUPTED = exit_status(ErrorCode.CANCELLED)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``stembridge preview`` on the CLI's subparsers; returns the parser."""
    p = subparsers.add_parser(
        "preview", help="play a song as stems while it is being separated (needs pyo)",
        description="Play FILE as stems in real time while the warm engine separates it "
        "(the original mix fills in where the stems are not ready yet). Control it over "
        f"OSC on {HOST} (default port {DEFAULT_PREVIEW_PORT}, see PROTOCOL.md) or, on "
        "a terminal, with keys: 1-6 mute/unmute a stem (a: original/master with --master), "
        "space play/stop, left/right seek "
        "5 s, q quit.",
        epilog="examples:\n  stembridge preview song.wav --stems 4 --start-at 60\n"
        "  stembridge preview song.wav --render out.wav --dur 20 --automation cues.jsonl\n"
        "  stembridge preview song.wav --port 47900 --token SECRET   # another server\n"
        "  stembridge preview song.wav --master song.master.wav      # A/B, loudness matched\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path, help="the song (never modified)")
    p.add_argument("--master", type=Path, default=None, metavar="MASTER",
                   help="A/B instead of stems: play FILE and its master MASTER loudness "
                   "matched, switching with the a key or /stembridge/preview/ab (no server)")
    p.add_argument("--stems", type=int, choices=(2, 4, 5, 6), default=None)
    p.add_argument("--model", default=None, help="model name (default: the server's)")
    p.add_argument("--start-at", type=float, default=0.0, metavar="SEC",
                   help="start playing (and separating) here")
    p.add_argument("--audio", choices=("portaudio", "jack"), default="portaudio",
                   help="audio back end (default portaudio: the sound card)")
    p.add_argument("--osc-port", type=int, default=None, metavar="N",
                   help=f"UDP control port on {HOST} (default {DEFAULT_PREVIEW_PORT}; "
                   "0 = any free port; with --render only when given)")
    p.add_argument("--render", type=Path, default=None, metavar="OUT.wav",
                   help="render to this file instead of playing (no sound card needed); "
                   "a JSON report goes next to it")
    p.add_argument("--dur", type=float, default=None, metavar="SEC",
                   help="seconds to render (with --render)")
    p.add_argument("--automation", type=Path, default=None, metavar="FILE",
                   help="JSON-lines control events to apply while rendering")
    p.add_argument("--buffer-size", type=int, default=512, metavar="FRAMES",
                   help="frames per audio block (power of two, default 512)")
    p.add_argument("--ramp-ms", type=float, default=20.0,
                   help="gain ramps and crossfades, ms (default 20)")
    p.add_argument("--host", default=None,
                   help="the stembridge server's address (default $STEMBRIDGE_HOST, else "
                   "127.0.0.1). The stems arrive through shared memory: from a server on "
                   "another machine (which must see FILE at the same path) only the "
                   "mixture plays")
    p.add_argument("--port", type=int, default=None, metavar="N",
                   help="the server's UDP port (default $STEMBRIDGE_PORT; with neither "
                   "--host nor --port, nor those variables, the running local server is "
                   "used, started if needed)")
    p.add_argument("--token", default=None,
                   help="the server's token (default $STEMBRIDGE_TOKEN)")
    return p


def run(args: argparse.Namespace) -> int:
    """``stembridge preview``: returns the exit status (README, "Exit codes")."""
    from bridge.client import ClientError
    from engine.errors import StembridgeError

    try:
        return _run(args)
    except StembridgeError as err:
        print(f"stembridge preview: error [{err.code.value}]: {err}", file=sys.stderr)
        return err.exit_code
    except ClientError as err:
        fix = hint(err.code, "cli")
        print(f"stembridge preview: error [{err.code}]: {err}" + (f" {fix}" if fix else ""),
              file=sys.stderr)
        return client_exit_status(err.code)
    except KeyboardInterrupt:
        print("stembridge preview: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED


def client_exit_status(code: str) -> int:
    """A client command's exit status for a `ClientError` code: `EXIT_NO_SERVER` when no
    server answered, else `EXIT_SERVER_ERROR` (the server refused)."""
    return EXIT_NO_SERVER if exit_status(code) == EXIT_NO_SERVER else EXIT_SERVER_ERROR


def check_args(args: argparse.Namespace) -> None:
    """Raise `InvalidArgumentError` for options that do not go together or are out of
    range (before anything is opened)."""
    from engine.errors import InvalidArgumentError

    if args.render is None and (args.dur is not None or args.automation is not None):
        raise InvalidArgumentError("--dur and --automation go with --render OUT.wav.")
    if args.render is not None and not (args.dur is not None and math.isfinite(args.dur)
                                        and args.dur > 0):
        raise InvalidArgumentError("--render needs --dur SEC, a duration > 0.")
    n = args.buffer_size
    if not 32 <= n <= 8192 or n & (n - 1):
        raise InvalidArgumentError(f"--buffer-size {n}: use a power of two, 32..8192.")
    if not (math.isfinite(args.start_at) and args.start_at >= 0):
        raise InvalidArgumentError("--start-at must be >= 0 seconds.")
    if not 1.0 <= args.ramp_ms <= 1000.0:
        raise InvalidArgumentError("--ramp-ms must be in [1, 1000].")
    if args.osc_port is not None and not 0 <= args.osc_port <= 65535:
        raise InvalidArgumentError("--osc-port must be 0..65535.")
    if args.port is not None and not 1 <= args.port <= 65535:
        raise InvalidArgumentError("--port must be the server's port, 1..65535.")
    inputs = [args.file] + ([args.master] if getattr(args, "master", None) else [])
    if args.render is not None and any(args.render.resolve() == f.resolve() for f in inputs):
        raise InvalidArgumentError("--render would overwrite the input; choose another file.")


def _run(args: argparse.Namespace) -> int:
    from engine.audio import probe
    from engine.errors import InvalidArgumentError, OutputError

    check_args(args)
    info = probe(args.file)  # header only: a missing or unreadable file fails here
    if info.duration and args.start_at >= info.duration:
        raise InvalidArgumentError(f"--start-at {args.start_at:g} s is past the end of "
                                   f"{args.file} ({info.duration:.1f} s).")
    cues = read_automation(args.automation) if args.automation is not None else []
    pair = None
    if getattr(args, "master", None) is not None:
        from bridge.preview.compare import load_pair

        pair = load_pair(args.file, args.master)
    samplerate = info.samplerate if pair is None else pair[2]
    live = args.render is None
    if live:
        check_audio_device(args.audio)
    osc = None
    if live or args.osc_port is not None:
        port = DEFAULT_PREVIEW_PORT if args.osc_port is None else args.osc_port
        try:
            osc = PreviewOscServer(port)
        except OSError as exc:
            raise OutputError(f"Cannot listen for OSC on {HOST}:{port}: {exc}. Is another "
                              "preview running? Use --osc-port N (0 = any free "
                              "port).") from exc
    try:
        server = boot_server(args.audio if live else "manual", samplerate,
                             args.buffer_size)
    except BaseException:
        if osc is not None:
            osc.stop()
        raise
    try:
        if pair is not None:
            return _ab_session(args, pair, server, osc, cues)
        return _session(args, info.samplerate, server, osc, cues)
    finally:
        if osc is not None:
            osc.stop()
        server.shutdown()


def _session(args: argparse.Namespace, samplerate: int, server: Any,
             osc: PreviewOscServer | None, cues: list[Cue]) -> int:
    from bridge.preview.player import PreviewPlayer
    from engine.audio import load
    from engine.errors import InvalidArgumentError

    where = server_address(args.host, args.port)
    print("stembridge preview: connecting to the stembridge server " + (
        "(starting it if needed)..." if where is None else f"at {where[0]}:{where[1]}..."),
        file=sys.stderr)
    client = connect(args.host, args.port, args.token)
    t_submit = time.perf_counter()
    try:
        job = client.split(args.file, stems=args.stems, model=args.model,
                           start_at=args.start_at, shm=True)
    except BaseException:
        client.close()
        raise
    follower = JobFollower(client, job)
    follower.start()
    player = None
    try:
        mixture = load(args.file)[0].samples  # decoded while the engine starts the job
        started = follower.wait_started()
        if (started["samplerate"], started["channels"]) != (samplerate, mixture.shape[0]):
            raise InvalidArgumentError(
                f"The server decoded {args.file} as {started['channels']} channel(s) at "
                f"{started['samplerate']} Hz, this process as {mixture.shape[0]} at "
                f"{samplerate} Hz: is the server running elsewhere with other decoders?")
        player = PreviewPlayer(server, mixture, samplerate, started["stems"],
                               reader=follower.reader, start_at=args.start_at,
                               ramp=args.ramp_ms / 1000, capture=args.render is not None,
                               live=args.render is None)
        if osc is not None:
            osc.start(player.handle)
        if args.render is not None:
            return _render_to_file(args, player, cues, follower, job, t_submit)
        return _play_live(args, player, osc, follower, t_submit)
    finally:
        try:
            if player is not None:
                player.close()
            follower.stop()
            client.close()
            if follower.reader is not None:
                follower.reader.close()
        finally:
            finish_job(client, job)


def _ab_session(args: argparse.Namespace, pair: Any, server: Any,
                osc: PreviewOscServer | None, cues: list[Cue]) -> int:
    from bridge.preview.compare import ABPlayer

    original, master, samplerate, gains = pair
    player = ABPlayer(server, original, master, samplerate, gains, start_at=args.start_at,
                      ramp=args.ramp_ms / 1000, capture=args.render is not None,
                      live=args.render is None)
    lufs = ", ".join(f"{k} {'-inf' if v is None else f'{v:.1f}'} LUFS" for k, v in (
        ("original", gains.original_lufs), ("master", gains.master_lufs)))
    print(f"A/B {args.file.name} vs {args.master.name}: {lufs}; master played "
          f"{gains.gain_db:+.2f} dB against the original")
    follower = _NoJob()
    try:
        if osc is not None:
            osc.start(player.handle)
        if args.render is not None:
            return _render_to_file(args, player, cues, follower,  # type: ignore[arg-type]
                                   "", time.perf_counter(), realtime=False)
        return _play_live(args, player, osc, follower,  # type: ignore[arg-type]
                          time.perf_counter())
    finally:
        player.close()


class _NoJob:
    """What an A/B session has instead of a job follower: no news, nothing to wait for."""

    def __init__(self) -> None:
        import collections

        self.news: collections.deque[str] = collections.deque()
        self.started: dict[str, Any] | None = None
        self.state, self.error = "no job (A/B)", None


def _render_to_file(args: argparse.Namespace, player: PreviewPlayer, cues: list[Cue],
                    follower: JobFollower, job: str, t_submit: float, *,
                    realtime: bool = True) -> int:
    from engine.audio import write_audio
    from engine.errors import OutputError
    from protocol.files import write_json_atomic

    audio = render(player, args.dur, cues, realtime=realtime)
    for line in [*player.stats.news, *follower.news]:
        print(f"  {line}")
    target: Path = args.render
    fmt = "flac" if target.suffix.lower() == ".flac" else "wav"
    write_audio(target, audio, player.samplerate, fmt=fmt)
    rep = summary(player.stats, player.output_frames, t_submit)
    rep.update({"output": str(target.resolve()), "source": str(args.file.resolve()),
                "job": job, "job_folder": (follower.started or {}).get("folder"),
                "job_state": follower.state,
                "job_error": None if follower.error is None else str(follower.error),
                "start_at": args.start_at,
                "automation": [{"t": c.t, "address": c.message.address,
                                "line": c.line} for c in cues]})
    report_path = target.with_suffix(".json")
    try:
        write_json_atomic(report_path, rep)
    except OSError as exc:
        raise OutputError(f"Cannot write {report_path}: {exc}") from exc
    print(summary_line(rep))
    print(f"wrote {target} and {report_path}")
    return 0


def _play_live(args: argparse.Namespace, player: PreviewPlayer, osc: PreviewOscServer | None,
               follower: JobFollower, t_submit: float) -> int:
    import signal

    quit_event = threading.Event()
    previous = None
    with contextlib.suppress(ValueError):  # not the main thread: no signal handler
        previous = signal.signal(signal.SIGTERM, lambda *_: quit_event.set())
    keys = KeyControl(player.controls, quit_event, position=lambda: player.position,
                      news=player.stats.news).start()
    where = f"OSC on {HOST}:{osc.address[1]}" if osc is not None else "no OSC"
    what = "a original/master" if player.controls.is_ab else "1-6 mute"
    print(f"playing {args.file.name} from {clock(args.start_at)} ({where}; keys: {what}, "
          "space play/stop, arrows seek, q quit; Ctrl-C stops)")
    player.server.start()
    try:
        while not quit_event.is_set() and not player.ended:
            time.sleep(0.05)
            for queue in (player.stats.news, follower.news):
                while queue:
                    print(f"  {queue.popleft()}")
    except KeyboardInterrupt:  # Ctrl-C is the ordinary way to quit a player
        pass
    finally:
        keys.stop()
        player.server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print(summary_line(summary(player.stats, player.output_frames, t_submit)))
    return 0
