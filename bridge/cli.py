"""The `stembridge` command line.

    stembridge split FILE... [--stems 2|4|5|6|NAMES] [--model NAME] [--out DIR]
                             [--format wav|flac|mp3] [--bit-depth 16|24|32f]
                             [--sample-rate 44100|48000] [--normalize]
                             [--start-at SEC] [--device auto|cpu|cuda|mps] [--no-cache]
    stembridge models list [--json]
    stembridge models fetch NAME
    stembridge models make-test NAME --dir DIR [--size tiny|full] [--format safetensors|th]
    stembridge serve [--detach] [--host H] [--port N] [--token T] [--output-root DIR] ...
    stembridge ping | submit FILE [--wait] | status [JOB] | cancel JOB  [--host --port --token]
    stembridge batch SOURCES... --out DIR [--ray [auto|ADDRESS]] [--workers N] [--no-resume]
    stembridge cache info | prune [--max-mb MB]
    stembridge master FILE... [--preset streaming|loud|reference] [--platform NAME] ...
    stembridge analyze FILE... [--json] [--plot OUT.png]
    stembridge eval --model NAME[,NAME...] --musdb PATH|builtin [--compare BASELINE.json]
    stembridge ensemble train --members A,B --musdb PATH --out DIR [--epochs N] [--seed S]

This module holds the parser and `main`; the commands live in `bridge.commands` (split,
server, client). Exit status: 0 success; otherwise the code of the first error (see
README, "Exit codes"). Heavy imports (torch, the engine) happen inside the commands, never
at import time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from bridge import preview
from bridge.commands import analyze as analyze_cmd
from bridge.commands import batch, install_daw
from bridge.commands import cache as cache_command
from bridge.commands import ensemble as ensemble_cmd
from bridge.commands import eval as eval_cmd
from bridge.commands import master as master_cmd
from bridge.commands.client import add_address_options, cmd_client, cmd_stop
from bridge.commands.models import cmd_models
from bridge.commands.server import cmd_serve
from bridge.commands.split import add_output_arguments, cmd_split
from protocol import settings

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
    s.add_argument("--stems", type=_stems_arg, default=None,
                   help="2 = vocals + instrumental, 4 = vocals/drums/bass/other, 5 = + "
                   "piano (guitar in other), 6 = + guitar/piano; or a subset of the "
                   "model's stems, e.g. vocals,drums")
    s.add_argument("--rest", choices=("keep", "drop"), default="keep",
                   help="with a subset: keep the other stems summed into other (default), "
                   "or drop them")
    s.add_argument("--model", default=None, help="model name (default: spleeter-2stems for 2 "
                   "stems, htdemucs for 4, htdemucs_6s for 5 and 6); see `stembridge models "
                   "list`. An "
                   "ensemble joins names with '+', e.g. mdx-voc-ft+htdemucs, optionally "
                   "@avg_wave|median_wave|min_spec|max_spec|avg_fft (default avg_wave); a trained "
                   "StemMixer is ensemble:DIR (stembridge ensemble train)")
    s.add_argument("--out", type=Path, default=Path("stems"),
                   help="output folder; each input gets a sub-folder (default: ./stems)")
    add_output_arguments(s)
    s.add_argument("--start-at", type=float, default=0.0, metavar="SEC",
                   help="separate from this time first (e.g. the play cursor), then the rest")
    s.add_argument("--device", default=settings.device(),
                   help="auto (CUDA, MPS, else CPU), cpu, cuda, cuda:N, mps")
    s.add_argument("--precision", default=settings.precision(),
                   choices=("auto", "fp32", "bf16", "fp16"))
    s.add_argument("--overlap", type=float, default=None, help="window overlap fraction")
    s.add_argument("--batch-size", type=int, default=0, help="windows per forward pass (0=auto)")
    s.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    s.add_argument("--models-dir", type=Path, default=None, help="model weights folder")
    s.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    s.add_argument("--json", action="store_true", help="print the result metadata as JSON")

    sv = sub.add_parser("serve", help="run the warm engine server (OSC over UDP)")
    # None = not given: defaults are read when the command runs (protocol.settings), and
    # `serve --detach` passes on exactly what was given
    sv.add_argument("--host", default=None, help="bind address (default STEMBRIDGE_HOST, "
                    "else 127.0.0.1; anything but loopback requires --token)")
    sv.add_argument("--port", type=int, default=None, help="UDP port (default "
                    f"STEMBRIDGE_PORT, else {settings.DEFAULT_PORT}; with --detach a free one; "
                    "0 = any free one)")
    sv.add_argument("--token", default=None, help="secret every request must carry "
                    "(default STEMBRIDGE_TOKEN; required off loopback)")
    sv.add_argument("--token-file", type=Path, default=None, help="read the token from "
                    "this file's first line (unlike --token, not shown by ps)")
    sv.add_argument("--device", default=None, help="auto (default, or STEMBRIDGE_DEVICE), "
                    "cpu, cuda, cuda:N, mps")
    sv.add_argument("--precision", default=None, choices=("auto", "fp32", "bf16", "fp16"))
    sv.add_argument("--preload", default="", help="models to load at start, e.g. "
                    "spleeter-2stems,htdemucs")
    sv.add_argument("--output-root", type=Path, default=None,
                    help="where job folders are written (default ~/.cache/stembridge/jobs)")
    sv.add_argument("--models-dir", type=Path, default=None)
    sv.add_argument("--model-memory-mb", type=float, default=None, help="budget for warm "
                    "models (least recently used ones are unloaded; 0 = automatic)")
    sv.add_argument("--jobs", type=int, default=None, metavar="N", help="jobs run at "
                    "once (default: 4 on a CUDA GPU, else 1)")
    sv.add_argument("--batcher", default=None, choices=("auto", "on", "off"),
                    help="windows of concurrent jobs on one model in one forward pass "
                    "(auto, the default: on a CUDA GPU only)")
    sv.add_argument("--batch-windows", type=int, default=None, metavar="N", help="windows "
                    "per merged pass at most (default: as fit the GPU's memory; 4 on a CPU)")
    sv.add_argument("--detach", action="store_true", help="start in the background and "
                    "return once it answers (idempotent: reuses a running server)")

    sb = sub.add_parser("submit", help="send a file to the running server")
    sb.add_argument("file", type=Path, nargs="?", help="audio file (absolute or relative)")
    sb.add_argument("--request", type=Path, default=None, metavar="JSON",
                    help="read the job from a JSON request file and answer in "
                    "<name>.reply.json (for clients without UDP, e.g. REAPER scripts)")
    sb.add_argument("--stems", type=int, choices=(2, 4, 5, 6), default=None)
    sb.add_argument("--model", default=None)
    sb.add_argument("--start-at", type=float, default=0.0)
    sb.add_argument("--format", choices=("wav", "flac", "mp3"), default="wav",
                    help="the job's consolidated stems (as for split)")
    sb.add_argument("--bit-depth", choices=("16", "24", "32f"), default=None)
    sb.add_argument("--sample-rate", type=int, choices=(44100, 48000), default=None)
    sb.add_argument("--normalize", action="store_true")
    sb.add_argument("--wait", action="store_true", help="follow progress until done")
    st = sub.add_parser("status", help="server status, or one job's")
    st.add_argument("job", nargs="?", default="")
    ca = sub.add_parser("cancel", help="cancel a job (prints the server's reply)")
    ca.add_argument("job")
    pi = sub.add_parser("ping", help="check that the server answers")
    sp = sub.add_parser("stop", help="stop the server gracefully (the running job is "
                        "checkpointed and resumes when a server starts again)")
    sp.add_argument("--timeout", type=float, default=60.0, metavar="SEC",
                    help="how long to wait for the server to be gone (default 60)")
    for client_parser in (sb, st, ca, pi, sp):
        add_address_options(client_parser)

    m = sub.add_parser("models", help="list, fetch or create models")
    msub = m.add_subparsers(dest="models_command")
    ml = msub.add_parser("list", help="known models, where they are installed, and which "
                         "files to copy by hand on a machine without internet")
    ml.add_argument("--json", action="store_true")
    ml.add_argument("--out", type=Path, default=None, metavar="FILE", help="with --json: "
                    "write the list to FILE (atomically) instead of printing it (for DAW "
                    "scripts without pipes, e.g. REAPER's Settings)")
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
    install_daw.add_parser(sub)
    batch.add_parser(sub)
    cache_command.add_parser(sub)
    master_cmd.add_parser(sub)
    analyze_cmd.add_parser(sub)
    eval_cmd.add_parser(sub)
    ensemble_cmd.add_parser(sub)
    return p


def _stems_arg(text: str) -> int | list[str]:
    """``--stems``: a count (2, 4, 5, 6) or comma-separated stem names."""
    if text.strip().isdigit():
        if int(text) not in (2, 4, 5, 6):
            raise argparse.ArgumentTypeError("a split gives 2, 4, 5 or 6 stems")
        return int(text)
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError("name different stems, e.g. vocals,drums")
    return names


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

    if args.command in ("split", "serve", "batch", "master"):  # they run torch here
        from engine import allocator
        from engine.device import configure_threads

        configure_threads()
        allocator.configure()
    try:
        if args.command == "split":
            return cmd_split(args)
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "preview":
            return preview.run(args)
        if args.command == "batch":
            return batch.cmd_batch(args)
        if args.command == "stop":
            return cmd_stop(args)
        if args.command == "install-daw":
            return install_daw.cmd_install_daw(args)
        if args.command == "master":
            return master_cmd.cmd_master(args)
        if args.command == "analyze":
            return analyze_cmd.cmd_analyze(args)
        if args.command == "eval":
            return eval_cmd.cmd_eval(args)
        if args.command in ("submit", "status", "cancel", "ping"):
            return cmd_client(args)
        if args.command == "ensemble":
            return ensemble_cmd.cmd_ensemble(args)
        if args.command == "cache":
            return cache_command.cmd_cache(args)
        return cmd_models(args)
    except StembridgeError as err:
        from bridge.commands import report

        report.error(err.code, str(err))
        return err.exit_code
    except settings.SettingError as exc:  # e.g. an unreadable STEMBRIDGE_TOKEN_FILE
        print(f"stembridge: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `stembridge models list | head`
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (no flush error at exit)
        return 0
    except KeyboardInterrupt:
        print("stembridge: interrupted; no partial stems were written.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
