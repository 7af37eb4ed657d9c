"""The golden vectors (messages.json) and helpers the protocol tests share."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from pythonosc.osc_message import OscMessage

from protocol.messages import (
    Address,
    Message,
    ProtocolError,
    decode,
    unpack,
)

ROOT = Path(__file__).resolve().parent.parent.parent
GOLDEN_DIR = ROOT / "tests" / "golden"
GOLDEN: list[dict[str, Any]] = json.loads(
    (GOLDEN_DIR / "messages.json").read_text(encoding="utf-8"))
BY_NAME = {e["name"]: e for e in GOLDEN}
NAMES = [e["name"] for e in GOLDEN]
DOC = (ROOT / "PROTOCOL.md").read_text(encoding="utf-8")
ADDRESSES = {v for k, v in vars(Address).items() if not k.startswith("_")}

FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN_DIR / "make_golden.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _data(entry: dict[str, Any]) -> bytes:
    return bytes.fromhex(entry["hex"])


def _args(entry: dict[str, Any]) -> list[Any]:
    """The entry's arguments as `encode` takes them (a map is packed into a blob)."""
    return [a["msgpack"] if isinstance(a, dict) else a for a in entry["args"]]


def _osc_string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return raw + b"\0" * (4 - len(raw) % 4)


def _safe_decode(data: Any) -> Message | None:
    """`decode(data)`, None for a ProtocolError; anything else propagates (a failure).
    Blob arguments of a decoded message go through `unpack` the same way."""
    try:
        msg = decode(data)
    except ProtocolError:
        return None
    for arg in msg.args:
        if isinstance(arg, bytes):
            with contextlib.suppress(ProtocolError):
                unpack(arg)
    return msg


def _same_float(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _assert_python_osc_agrees(data: bytes, msg: Message) -> None:
    theirs = OscMessage(data)
    assert theirs.address == msg.address
    assert len(theirs.params) == len(msg.args)
    for mine, other in zip(msg.args, theirs.params, strict=True):
        assert type(mine) is type(other), (mine, other)
        if isinstance(mine, float):
            assert _same_float(mine, other)
        else:
            assert mine == other


# --------------------------------------------------------------------------- golden file

