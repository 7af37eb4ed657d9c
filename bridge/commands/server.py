"""`stembridge serve`: run the warm engine server here, or (``--detach``) make sure one
runs in the background with the options given.

Every option reaches the detached process: ``--host``, ``--port`` (when given; else the
detached server takes a free port and publishes it in the discovery record),
``--device``, ``--precision``, ``--preload``, ``--output-root``, ``--models-dir``,
``--model-memory-mb``, ``--jobs``, ``--batcher``, ``--batch-windows``, and ``--token``
(or ``--token-file``'s token) through the child's ``STEMBRIDGE_TOKEN`` (never on
its command line, where other local users could read it). A server that already runs is
reused as it is; a warning names the options it does not match.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from bridge.commands import report
from protocol import settings


def detached_args(args: argparse.Namespace) -> tuple[str, ...]:
    """The ``serve`` arguments that give a detached server every option of `args` (all
    but the token; see the module docstring). Paths are made absolute."""
    out: list[str] = []
    for flag, value in (("--host", args.host), ("--port", args.port),
                        ("--device", args.device), ("--precision", args.precision),
                        ("--model-memory-mb", args.model_memory_mb),
                        ("--jobs", args.jobs), ("--batcher", args.batcher),
                        ("--batch-windows", args.batch_windows)):
        if value is not None:
            out += [flag, str(value)]
    if args.preload:
        out += ["--preload", args.preload]
    for flag, path in (("--output-root", args.output_root), ("--models-dir", args.models_dir)):
        if path is not None:
            out += [flag, str(Path(path).expanduser().absolute())]
    return tuple(out)


def _mismatches(args: argparse.Namespace, info: dict[str, Any]) -> list[str]:
    """The options of `args` that the running server (discovery record `info`) lacks."""
    found = []
    if args.port is not None and args.port != 0 and int(info.get("port", -1)) != args.port:
        found.append(f"--port {args.port} (it listens on {info.get('port')})")
    if args.output_root is not None and info.get("output_root") and \
            Path(info["output_root"]).resolve() != Path(args.output_root).resolve():
        found.append(f"--output-root {args.output_root} (it writes to {info['output_root']})")
    token = _token(args)
    if token and info.get("token_required") is False:
        found.append("--token (it requires none)")
    return found


def _token(args: argparse.Namespace) -> str | None:
    """``--token``, else ``--token-file``'s first line, else the environment's."""
    if args.token:
        return str(args.token)
    if getattr(args, "token_file", None) is not None:
        return settings.read_token_file(args.token_file)
    return settings.token()


def _detach(args: argparse.Namespace) -> int:
    from bridge.client import ClientError, ensure_running

    try:
        token = _token(args)
    except settings.SettingError as exc:
        print(f"stembridge serve: {exc}", file=sys.stderr)
        return 2
    if token:
        os.environ["STEMBRIDGE_TOKEN"] = token  # inherited by the detached server only
    try:
        info = ensure_running(300.0 if args.preload else 60.0, detached_args(args),
                              port=args.port or None)
    except ClientError as err:
        report.error(err.code, str(err))
        return err.exit_code
    different = _mismatches(args, info)
    if different:
        report.warning(f"a server is already running (pid {info.get('pid')}) and was kept "
                       f"as it is; it does not match {', '.join(different)}. Stop it first "
                       "to start one with these options.")
    print(f"stembridge server running on {info['host']}:{info['port']} (pid {info['pid']})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM/SIGINT (or detach); returns the exit status."""
    import logging
    import signal

    if any(n is not None and n < 1 for n in (args.jobs, args.batch_windows)):
        print("stembridge serve: --jobs and --batch-windows take a number of at least 1.",
              file=sys.stderr)
        return 2
    if args.detach:
        return _detach(args)
    from bridge.server import ServerConfig, StembridgeServer, default_output_root
    from engine.config import EngineConfig
    from engine.separator import Engine

    host = args.host or settings.host()
    port = settings.port() if args.port is None else args.port
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    engine = Engine(EngineConfig(
        device=args.device or settings.device(),
        precision=args.precision or "auto", models_dir=args.models_dir,
        model_memory_mb=(settings.model_memory_mb() if args.model_memory_mb is None
                         else args.model_memory_mb),
        compile=True,  # with STEMBRIDGE_COMPILE=on: compiled forwards, built in the background
        batcher=args.batcher or "auto", batcher_windows=args.batch_windows or 0))
    for name in filter(None, args.preload.split(",")):
        engine.model(name.strip())
    try:
        token = _token(args)
    except settings.SettingError as exc:
        print(f"stembridge serve: {exc}", file=sys.stderr)
        return 2
    config = ServerConfig(host=host, port=port, token=token, jobs=args.jobs or 0,
                          output_root=args.output_root or default_output_root())
    try:
        server = StembridgeServer(config, engine).start()
    except ValueError as exc:
        print(f"stembridge serve: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"stembridge serve: cannot listen on {host}:{port}: {exc}. Is another "
              "server running? (`stembridge ping`) Use --port 0 for any free port.",
              file=sys.stderr)
        return 10

    def _stop(signum: int, frame: object) -> None:
        server._stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    bound_host, bound_port = server.address
    print(f"stembridge server listening on {bound_host}:{bound_port} (pid {os.getpid()})",
          flush=True)
    server.wait()
    server.stop()
    print("stembridge server stopped", flush=True)
    return 0
