"""Golden example datagrams: one of every stembridge protocol v1 message (PROTOCOL.md).

    python tests/golden/make_golden.py            # rewrite messages.json and PROTOCOL.md's examples and reference
    python tests/golden/make_golden.py --out DIR --doc DIR/PROTOCOL.md   # elsewhere (tests)

``messages.json`` is a JSON list; each entry is one datagram::

    {"name": "job_progress",            # unique, stable
     "direction": "push",               # "request" (client -> server) or "push"
     "address": "/stembridge/job/progress",
     "tags": ",siif",                   # the OSC type tag string, exactly as on the wire
     "args": ["20261121-120000-0a1b2c3d", 3, 9, 4.75],
     "hex": "2f7374656d..."}            # the whole datagram, lowercase hex

In ``args`` a msgpack blob is ``{"msgpack": {...}}`` (the decoded map, keys in wire
order); ``i`` is a JSON integer, ``f`` a JSON number whose value is exactly the float32
on the wire (as is every float inside a map: floats there are float64). Inside a map a JSON
number written with a ``.`` or an exponent is a msgpack float, otherwise an integer.

Every example is built from the message types of `protocol.messages` (their
``to_args()``), so the golden bytes are what the server and client send. Each example
block in PROTOCOL.md sits between ``<!-- golden: NAME -->`` and ``<!-- /golden -->`` and is
regenerated from the same data; the reference sections (``<!-- reference: NAME -->``:
field tables, the error-code table) come from `protocol.doc`. Output is deterministic.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from protocol import doc as protocol_doc
from protocol.errors import ErrorCode
from protocol.messages import (
    Accepted,
    Cancel,
    Done,
    ErrorMsg,
    Hello,
    JobError,
    Jobs,
    JobsReply,
    JobSummary,
    MasterDone,
    MasterRequest,
    Payload,
    Ping,
    Pong,
    Progress,
    RegionDone,
    Release,
    ServerStatus,
    ShmInfo,
    Shutdown,
    SplitRequest,
    Started,
    Status,
    Welcome,
    encode,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# One consistent story: a REAPER script splits song.wav, the server streams it back.
TOKEN = "q7Lx2fN9vR4tB8mK"
SONG = "/home/user/Music/song.wav"
JOB = "20261121-120000-0a1b2c3d"
OLD_JOB = "20261121-115502-9f8e7d6c"
SERVER_ROOT = "/home/user/.cache/stembridge/jobs"
OUTPUT_ROOT = f"{SERVER_ROOT}/my-album"
FOLDER = f"{OUTPUT_ROOT}/{JOB}"
REGION = (1345050, 1675800)  # frames at 44100 Hz: 30.5 s .. 38.0 s of the section
STEMS = ("vocals", "instrumental")
FOUR = ["vocals", "drums", "bass", "other"]


def _region_path(stem: str) -> str:
    start, end = REGION
    return f"{FOLDER}/regions/{stem}/{start:010d}-{end:010d}.wav"


def _summary(job: str, state: str, done: int, total: int, eta: float, folder: str,
             error: JobError | None) -> JobSummary:
    return JobSummary(job=job, state=state, source=SONG, regions_done=done,
                      regions_total=total, eta=eta, folder=folder, error=error)


Example = tuple[str, str, tuple[Any, ...]]


def _ex(name: str, message: Payload) -> Example:
    return name, message.ADDRESS, message.to_args()


def requests() -> list[Example]:
    split = SplitRequest(
        request_id=7, source=SONG, stems=2, model="htdemucs", start_at=30.5,
        section_start=12.25, section_length=60.0, priority="batch", output_root=OUTPUT_ROOT,
        reply_port=47801, token=TOKEN)
    minimal = SplitRequest(request_id=8, source="/home/user/Music/Café del Mar – Live.flac")
    plain = ("/home/user/Music/song.wav", 4, 12.5, 47811)
    assert SplitRequest.payload_from_args(plain)["stems"] == 4
    return [
        _ex("hello", Hello(protocol=1, client="stembridge-reaper")),
        _ex("ping", Ping(1)),
        _ex("ping_token", Ping(2, TOKEN)),
        _ex("split", split),
        _ex("split_minimal", minimal),
        ("split_plain", SplitRequest.ADDRESS, plain),
        _ex("cancel", Cancel(JOB)),
        _ex("status_job", Status(JOB)),
        _ex("status_server", Status()),
        _ex("jobs", Jobs()),
        _ex("release", Release(JOB)),
        _ex("shutdown", Shutdown(TOKEN)),
        _ex("master", MasterRequest(source=SONG, preset="loud", format="flac",
                                    request_id=11)),
    ]


def pushes() -> list[Example]:
    welcome = Welcome(
        engine_version="0.1.0", protocol_version=1,
        models_available=["spleeter-2stems", "htdemucs", "htdemucs_ft", "htdemucs_6s",
                          "hdemucs_mmi", "mdx_extra"],
        models_loaded=["htdemucs"], device="cuda", precision="bf16",
        capabilities=["split", "cancel", "status", "jobs", "files", "start_at", "section"],
        output_root=SERVER_ROOT)
    region = RegionDone(JOB, REGION[0], REGION[1], 44100, 30.5, 38.0,
                        {s: _region_path(s) for s in STEMS})
    done = Done(JOB, {s: f"{FOLDER}/{s}.wav" for s in STEMS}, f"{FOLDER}/manifest.json",
                {"model_name": "htdemucs", "model_version": "955717e8", "device": "cuda",
                 "precision": "bf16", "runtime_seconds": 7.25, "cache_hit": False,
                 "stems": list(STEMS)})
    missing = ErrorMsg(JOB, 7, ErrorCode.INPUT_MISSING,
                       f"Cannot read {SONG}: [Errno 2] No such file or directory")
    unknown = ErrorMsg("", -1, ErrorCode.UNKNOWN_ADDRESS,
                       "Unknown address '/stembridge/splt'; see PROTOCOL.md.")
    server = ServerStatus(state="running", pid=48213, uptime=3725.5, queued=1, running=1,
                          models_loaded=["htdemucs"],
                          stats={"received": 57, "handled": 55, "malformed": 1, "unknown": 1,
                                 "unauthorized": 0, "internal": 0, "ignored": 0})
    running = _summary(JOB, "running", 3, 9, 4.75, FOLDER, None)
    jobs = JobsReply([
        _summary(OLD_JOB, "cancelled", 2, 9, 6.5, f"{SERVER_ROOT}/{OLD_JOB}",
                 JobError("cancelled", "The job was cancelled.")),
        running])
    started = Started(JOB, FOUR, 44100, 2, 9261000, FOLDER, ShmInfo(
        "sb0a1b2c3d_ix", {st: [f"sb0a1b2c3d_{i}_0", f"sb0a1b2c3d_{i}_1"]
                          for i, st in enumerate(FOUR)}))
    return [
        _ex("hello_reply", welcome),
        _ex("pong", Pong(1)),
        _ex("job_accepted", Accepted(7, JOB, FOLDER)),
        _ex("job_started", started),
        _ex("job_progress", Progress(JOB, 3, 9, 4.75)),
        _ex("job_region", region),
        _ex("job_done", done),
        _ex("error_job", missing),
        _ex("error_request", unknown),
        _ex("status_reply_server", server),
        _ex("status_reply_job", running),
        _ex("jobs_reply", jobs),
        _ex("master_done", MasterDone(
            JOB, f"{FOLDER}/song.master.flac", f"{FOLDER}/song.master.json",
            lufs_after=-14.0, true_peak_after=-1.0, passes=2)),
    ]


def _tag(arg: Any) -> str:
    if isinstance(arg, bool):
        return "T" if arg else "F"
    if arg is None:
        return "N"
    if isinstance(arg, int):
        return "i"
    if isinstance(arg, float):
        return "f"
    return "s" if isinstance(arg, str) else "b"


def _describe(arg: Any) -> Any:
    return {"msgpack": arg} if isinstance(arg, dict) else arg


def entries() -> list[dict[str, Any]]:
    out = []
    for direction, group in (("request", requests()), ("push", pushes())):
        for name, address, args in group:
            out.append({"name": name, "direction": direction, "address": address,
                        "tags": "," + "".join(_tag(a) for a in args),
                        "args": [_describe(a) for a in args],
                        "hex": encode(address, *args).hex()})
    return out


def dump(entries_: list[dict[str, Any]]) -> str:
    """The file's text: a JSON list, one entry a line (UTF-8, no escapes)."""
    lines = [json.dumps(e, ensure_ascii=False) for e in entries_]
    return "[\n" + ",\n".join(lines) + "\n]\n"


# --------------------------------------------------------------------------- PROTOCOL.md


def hexdump(data: bytes) -> list[str]:
    """16 bytes a line: offset, four 4-byte words (OSC's alignment), printable ASCII."""
    lines = []
    for pos in range(0, len(data), 16):
        chunk = data[pos:pos + 16]
        words = " ".join(chunk[i:i + 4].hex() for i in range(0, len(chunk), 4))
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{pos:04x}  {words:<35}  {text}")
    return lines


def pretty(value: Any, depth: int = 0) -> str:
    """JSON with one map key a line and flat arrays on one line."""
    pad = "  " * depth
    if isinstance(value, dict) and value:
        items = [f"{pad}  {json.dumps(k, ensure_ascii=False)}: {pretty(v, depth + 1)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        items = [f"{pad}  {pretty(v, depth + 1)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(value, ensure_ascii=False)


def example_block(entry: dict[str, Any]) -> str:
    """The fenced example PROTOCOL.md shows for one golden entry."""
    lines = [f"{entry['address']}  {entry['tags']}   ({len(entry['hex']) // 2} bytes)"]
    for tag, arg in zip(entry["tags"][1:], entry["args"], strict=True):
        if isinstance(arg, dict):
            lines.append(f"  {tag} msgpack {pretty(arg['msgpack'], 1)}")
        else:
            lines.append(f"  {tag} {json.dumps(arg, ensure_ascii=False)}")
    lines.append("")
    lines.extend(hexdump(bytes.fromhex(entry["hex"])))
    return "```text\n" + "\n".join(lines) + "\n```"


_BLOCK = re.compile(r"(<!-- golden: ([a-z_]+) -->\n)(.*?)(<!-- /golden -->)", re.S)


def update_doc(text: str, entries_: list[dict[str, Any]]) -> str:
    """`text` with every golden block regenerated; every entry must have exactly one."""
    by_name = {e["name"]: e for e in entries_}
    found = [m.group(2) for m in _BLOCK.finditer(text)]
    missing = sorted(set(by_name) - set(found))
    unknown = sorted(set(found) - set(by_name))
    twice = sorted({n for n in found if found.count(n) > 1})
    if missing or unknown or twice:
        raise SystemExit(f"PROTOCOL.md golden blocks: missing {missing}, unknown {unknown}, "
                         f"repeated {twice}")
    return _BLOCK.sub(lambda m: m.group(1) + example_block(by_name[m.group(2)]) + "\n"
                      + m.group(4), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder for messages.json")
    parser.add_argument("--doc", type=Path, default=REPO / "PROTOCOL.md",
                        help="PROTOCOL.md whose example blocks to regenerate")
    parser.add_argument("--no-doc", action="store_true", help="leave PROTOCOL.md alone")
    args = parser.parse_args(argv)
    data = entries()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "messages.json").write_text(dump(data), encoding="utf-8", newline="\n")
    if not args.no_doc:
        text = args.doc.read_text(encoding="utf-8")
        new = protocol_doc.update(update_doc(text, data))
        if new != text:
            args.doc.write_text(new, encoding="utf-8", newline="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
