"""PROTOCOL.md's reference sections, generated from the types of `protocol.messages` and
`protocol.jobfiles` and from `protocol.errors.CODES`.

    python -m protocol.doc            # rewrite the sections in ./PROTOCOL.md
    python -m protocol.doc --check    # exit 1 when they are stale

Each generated section sits between ``<!-- reference: NAME -->`` and ``<!-- /reference -->``;
NAME is ``messages`` (the address table), ``error_codes``, or a type name (its field
table). Everything outside the markers is prose, kept as written.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from protocol import jobfiles, messages
from protocol.errors import CODES, ErrorCode

#: When each code is sent: the one place these meanings are written.
MEANINGS: dict[ErrorCode, str] = {
    ErrorCode.INVALID_ARGUMENT: "a value is out of range: `stems`, `priority`, `format`, "
    "times, `overlap`, `reply_port`, a relative `source`, a path with a NUL or over its "
    "length limit, `output_root` outside the server's root, a file or inside a job folder",
    ErrorCode.INPUT_MISSING: "the source file does not exist or cannot be opened (checked "
    "before `job/accepted`, and again when the job runs)",
    ErrorCode.INPUT_UNREADABLE: "the file cannot be decoded",
    ErrorCode.INPUT_CORRUPT: "the decoder fails inside the file",
    ErrorCode.INPUT_EMPTY: "the file has no audio",
    ErrorCode.INPUT_TOO_SHORT: "the audio is shorter than the model needs",
    ErrorCode.INPUT_TOO_LONG: "the audio exceeds the server's length limit",
    ErrorCode.INPUT_NOT_FINITE: "the audio contains NaN or infinite samples",
    ErrorCode.INPUT_CHANNELS: "unsupported channel count",
    ErrorCode.INPUT_SAMPLERATE: "sample rate above the maximum (384 kHz) or not positive",
    ErrorCode.SOURCE_CHANGED: "the source file was modified while its job ran",
    ErrorCode.DECODER_MISSING: "a format needs ffmpeg, which is not installed",
    ErrorCode.PACKAGE_MISSING: "an optional package a feature needs (e.g. museval for "
    "`eval`) is not installed",
    ErrorCode.MODEL_UNKNOWN: "`model` is not a known name (checked before `job/accepted`)",
    ErrorCode.MODEL_NOT_INSTALLED: "the model's weights are not on this machine",
    ErrorCode.MODEL_CORRUPT: "the weights fail their checksum",
    ErrorCode.STEMS_UNSUPPORTED: "the model cannot produce `stems` (checked before "
    "`job/accepted`)",
    ErrorCode.DEVICE_UNAVAILABLE: "the configured device (e.g. CUDA) is not usable",
    ErrorCode.CANCELLED: "the job was cancelled; its region files are removed, its "
    "manifest stays",
    ErrorCode.OUTPUT_FAILED: "the job's files could not be written (disk full, permissions)",
    ErrorCode.INTERNAL: "a bug in the server or the engine; the server keeps running",
    ErrorCode.BAD_MESSAGE: "the datagram is not a valid OSC message, or a payload is not a "
    "msgpack map, or a required key is missing or has the wrong type",
    ErrorCode.UNKNOWN_ADDRESS: "the address is not one of the requests",
    ErrorCode.UNAUTHORIZED: "the server has a token and the request lacks it or has another",
    ErrorCode.TOO_MANY_JOBS: "this client (or the whole server) already has too many jobs "
    "queued or running",
    ErrorCode.UNKNOWN_JOB: "`cancel`, `status` or `release` names a job this server "
    "process does not know",
    ErrorCode.NOT_RUNNING: "no server answers at the address; also pushed to a job's "
    "client when the server stops (`shutdown`) before the job is done: it resumes when a "
    "server starts again",
    ErrorCode.TIMEOUT: "(client side, never sent) the server stopped answering",
    ErrorCode.REFERENCE_UNUSABLE: "(`master`) the reference track is silent or shorter "
    "than 3 s",
    ErrorCode.START_FAILED: "(client side, never sent) a server the client started exited "
    "or did not come up",
    ErrorCode.QUALITY_REGRESSION: "(`eval --compare`, never sent) a stem's figure fell "
    "below its baseline by more than the tolerance",
    ErrorCode.CLUSTER_UNAVAILABLE: "(`batch --ray`, never sent) the Ray cluster cannot be "
    "reached, or its workers cannot start",
    ErrorCode.STORAGE_UNAVAILABLE: "(`batch`, never sent) a remote input or output URL "
    "cannot be listed, read or written",
}

MESSAGE_TYPES: tuple[type[messages.Payload], ...] = (
    messages.Hello, messages.Ping, messages.SplitRequest, messages.Cancel, messages.Status,
    messages.Jobs, messages.Release, messages.Shutdown, messages.Welcome, messages.Pong,
    messages.Accepted, messages.Started, messages.Progress, messages.RegionDone,
    messages.Done, messages.ErrorMsg, messages.JobSummary, messages.ServerStatus,
    messages.JobsReply, messages.MasterRequest, messages.MasterDone)
PART_TYPES: tuple[type[messages.Payload], ...] = (
    messages.ShmInfo, messages.JobError, jobfiles.ReplyFile, jobfiles.Manifest,
    jobfiles.ManifestRegion, jobfiles.DiscoveryRecord)

_BLOCK = re.compile(r"(<!-- reference: ([A-Za-z_]+) -->\n)(.*?)(<!-- /reference -->)", re.S)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(f: Any) -> str:
    if f.default_factory is not MISSING:
        value = f.default_factory()
    elif f.default is MISSING:
        return ""
    else:
        value = f.default
    if value is None or value == [] or value == {}:
        return "absent"
    if isinstance(value, ErrorCode):
        value = value.value
    return f"`{value!r}`".replace("'", '"') if not isinstance(value, bool) else \
        f"`{str(value).lower()}`"


def _signature(t: type[messages.Payload]) -> str:
    if t.ARGS is None:
        return "`b` payload"
    tags = {"int": "i", "float": "f", "str": "s"}
    parts = []
    for f in fields(t):  # type: ignore[arg-type]
        tag = tags.get(f.metadata["type"], "?")
        arg = f"`{tag}` {f.name}"
        optional = f.default is not MISSING
        parts.append(f"[{arg}]" if optional else arg)
    return ", ".join(parts) if parts else "none"


def messages_table() -> str:
    """The address table: every message type with its arguments and purpose."""
    rows = ["| address | direction | arguments | type | what |", "|---|---|---|---|---|"]
    for t in MESSAGE_TYPES:
        first = (t.__doc__ or "").strip().split("\n\n")[0].replace("\n    ", " ")
        rows.append(f"| `{t.ADDRESS}` | {t.DIRECTION} | {_signature(t)} | "
                    f"`{t.__name__}` | {_cell(first)} |")
    return "\n".join(rows)


def field_table(t: type[messages.Payload]) -> str:
    """Key, type, required, default and meaning of every field of `t`."""
    rows = ["| key | type | required | default | meaning |", "|---|---|---|---|---|"]
    if t is jobfiles.RequestFile:
        for f in fields(messages.SplitRequest):
            if f.name in jobfiles.NOT_IN_REQUEST_FILES:
                continue
            rows.append(_row(f, token=f.name == "token"))
        rows.append(_row(next(f for f in fields(t) if f.name == "device")))
        return "\n".join(rows)
    for f in fields(t):  # type: ignore[arg-type]
        rows.append(_row(f, token=f.name == "token", wire=f.name in t.WIRE_REQUIRED))
    return "\n".join(rows)


def _row(f: Any, token: bool = False, wire: bool = False) -> str:
    required = wire or (f.default is MISSING and f.default_factory is MISSING)
    need = "if the server has one" if token else ("yes" if required else "no")
    return (f"| `{f.name}` | {f.metadata['type']} | {need} | {'' if wire else _default(f)} | "
            f"{_cell(f.metadata['doc'])} |")


def error_table() -> str:
    """Every code of `protocol.errors.CODES`: exit status, meaning, what to do."""
    missing = [c.value for c in ErrorCode if c not in MEANINGS]
    if missing:
        raise SystemExit(f"protocol/doc.py: no meaning written for {missing}")
    rows = ["| code | exit status | sent when | what to do (command line) | what to do (DAW) |",
            "|---|---|---|---|---|"]
    for code, info in CODES.items():
        rows.append(f"| `{code.value}` | {info.exit_status} | {_cell(MEANINGS[code])} | "
                    f"{_cell(info.hint.cli) or '—'} | {_cell(info.hint.daw) or '—'} |")
    return "\n".join(rows)


def sections() -> dict[str, str]:
    """Every generated section, by marker name."""
    out = {"messages": messages_table(), "error_codes": error_table(),
           "RequestFile": field_table(jobfiles.RequestFile)}
    for t in MESSAGE_TYPES + PART_TYPES:
        out[t.__name__] = field_table(t)
    return out


def update(text: str) -> str:
    """`text` with every reference section regenerated; every name must appear once."""
    blocks = sections()
    found = [m.group(2) for m in _BLOCK.finditer(text)]
    unknown = sorted(set(found) - set(blocks))
    twice = sorted({n for n in found if found.count(n) > 1})
    missing = sorted(set(blocks) - set(found))
    if unknown or twice or missing:
        raise SystemExit(f"PROTOCOL.md reference sections: missing {missing}, unknown "
                         f"{unknown}, repeated {twice}")
    return _BLOCK.sub(lambda m: m.group(1) + blocks[m.group(2)] + "\n" + m.group(4), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate PROTOCOL.md's reference.")
    parser.add_argument("doc", nargs="?", type=Path, default=Path("PROTOCOL.md"))
    parser.add_argument("--check", action="store_true", help="only report staleness")
    args = parser.parse_args(argv)
    text = args.doc.read_text(encoding="utf-8")
    new = update(text)
    if args.check:
        if new != text:
            print(f"{args.doc} is stale: run python -m protocol.doc", file=sys.stderr)
            return 1
        return 0
    if new != text:
        args.doc.write_text(new, encoding="utf-8", newline="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
