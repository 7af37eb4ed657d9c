"""`stembridge ping | submit | status | cancel | stop`: the commands that talk to a running
server through `bridge.client` (never imports torch or the engine).

Where: ``--host``/``--port`` (default ``STEMBRIDGE_HOST``/``STEMBRIDGE_PORT``, read now),
else the server of the discovery record (``submit`` starts one when none answers).
``--token`` (default ``STEMBRIDGE_TOKEN``) goes with every request.

Exit status from `protocol.errors.CODES` (README, "Exit codes"): no server 11; a request
the server refused (``unauthorized``, ``bad_message``, ...) 12; a job that failed exits
with its code's status (``input_missing`` 3, ``model_unknown`` 7, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bridge.commands import report
from protocol import settings
from protocol.errors import EXIT_NO_SERVER, ErrorCode, exit_status

#: Seconds `submit` without ``--wait`` waits for the job to start, so that a job that
#: fails at once (unknown model, unreadable file) is reported with its exit status.
EARLY_FAILURE_SECONDS = 5.0


def add_address_options(parser: argparse.ArgumentParser) -> None:
    """``--host``, ``--port``, ``--token`` of a client command (resolved at call time)."""
    parser.add_argument("--host", default=None, help="server address (default: "
                        "STEMBRIDGE_HOST, else the running server's, else 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="server UDP port (default: "
                        "STEMBRIDGE_PORT, else the running server's, else "
                        f"{settings.DEFAULT_PORT})")
    parser.add_argument("--token", default=None,
                        help="the server's access token (default: STEMBRIDGE_TOKEN)")


def cmd_client(args: argparse.Namespace) -> int:
    """Run `args.command` against the server; returns the exit status."""
    from bridge.client import Client, ClientError, submit_request_file

    if args.command == "submit":
        if args.request is not None:
            return submit_request_file(args.request)
        if args.file is None:
            print("stembridge: submit needs a FILE or --request JSON", file=sys.stderr)
            return exit_status(ErrorCode.INVALID_ARGUMENT)
        from bridge.commands.split import check_input

        problem = check_input(args.file.absolute())
        if problem is not None:
            report.error(problem[0], problem[1], str(args.file))
            return exit_status(problem[0])
    try:
        client = Client.connect(host=args.host, port=args.port, token=args.token,
                                start=args.command == "submit")
        with client:
            return _run(client, args)
    except ClientError as err:
        report.error(err.code, str(err))
        return err.exit_code
    except OSError as exc:  # e.g. a host name that does not resolve
        where = f"{args.host or 'the server'}" + (f":{args.port}" if args.port else "")
        report.error(ErrorCode.NOT_RUNNING, f"Cannot reach {where}: {exc}.")
        return EXIT_NO_SERVER


def _run(client: Any, args: argparse.Namespace) -> int:
    if args.command == "ping":
        print(f"pong in {client.ping() * 1000:.1f} ms from "
              f"{client.server[0]}:{client.server[1]}")
    elif args.command == "status":
        print(json.dumps(client.status(args.job), indent=2))
    elif args.command == "cancel":
        # the server's reply: the job's state as the server reports it after the request
        print(json.dumps(client.cancel(args.job), indent=2))
    else:
        return _submit(client, args)
    return 0


def _submit(client: Any, args: argparse.Namespace) -> int:
    job = client.split(args.file.absolute(), stems=args.stems, model=args.model,
                       start_at=args.start_at, format=getattr(args, "format", "wav"),
                       bit_depth=getattr(args, "bit_depth", None),
                       sample_rate=getattr(args, "sample_rate", None),
                       normalize=bool(getattr(args, "normalize", False)))
    print(f"job {job}", flush=True)
    if not args.wait:
        return _early_failure(client, job)
    for kind, data in client.events(job):
        if kind == "progress":
            print(f"  progress {data[0]}/{data[1]}", file=sys.stderr)
        elif kind == "done":
            for stem, path in data["files"].items():
                print(f"  {stem:13s} {path}")
    return 0


def _early_failure(client: Any, job: str) -> int:
    """Wait up to `EARLY_FAILURE_SECONDS` for `job` to start: 0 once it does (or is still
    queued then); a job error raises `ClientError` with the job's code."""
    from bridge.client import ClientError

    try:
        for kind, _data in client.events(job, timeout=EARLY_FAILURE_SECONDS):
            if kind != "progress":
                return 0
    except ClientError as err:
        if err.code != ErrorCode.TIMEOUT.value:
            raise
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """`stembridge stop`: send ``/stembridge/shutdown`` and wait until the server is gone
    (it no longer answers and its discovery record is removed). The running job finishes
    its current region and stays resumable."""
    import time

    from bridge.client import Client, ClientError, read_discovery

    port = args.port if args.port is not None else (
        settings.port() if settings.get("STEMBRIDGE_PORT") else None)
    info = read_discovery(port)
    host = args.host or (info or {}).get("host") or settings.host()
    port = port or (info or {}).get("port")
    if port is None:
        report.error(ErrorCode.NOT_RUNNING, "No stembridge server is running.")
        return exit_status(ErrorCode.NOT_RUNNING)
    try:
        with Client(host, int(port), token=args.token, timeout=5.0) as client:
            client.shutdown()
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                try:
                    client.ping(timeout=0.3)
                except ClientError:
                    if read_discovery(int(port)) is None:
                        print(f"stembridge server on {host}:{port} stopped")
                        return 0
                time.sleep(0.1)
    except ClientError as err:
        report.error(err.code, str(err))
        return err.exit_code
    report.error(ErrorCode.TIMEOUT, f"The server on {host}:{port} is still running after "
                 f"{args.timeout:.0f} s.")
    return exit_status(ErrorCode.TIMEOUT)
