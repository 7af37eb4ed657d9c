"""A Lua implementation of the protocol (tests/lua/stembridge_protocol.lua: OSC and
msgpack for Lua 5.4 hosts with sockets; REAPER's scripts use request files instead), run
in real Lua 5.4 through lupa, against the golden vectors the Python side is tested with."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

lupa = pytest.importorskip("lupa")
from lupa import lua54  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "tests" / "lua" / "stembridge_protocol.lua"
GOLDEN = json.loads((ROOT / "tests" / "golden" / "messages.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def lua():
    runtime = lua54.LuaRuntime(encoding=None, unpack_returned_tuples=True)
    assert runtime.eval("_VERSION") == b"Lua 5.4"
    proto = runtime.execute(LIB.read_bytes())
    helpers = runtime.execute(b"""
        local P = ...
        local H = {}
        function H.decode(s)
          local ok, address, tags, args = pcall(P.decode, s)
          if not ok then return false, address end
          local described = {}
          for i, a in ipairs(args) do
            local okb, v = pcall(P.unpack, a)
            described[i] = { raw = a, msgpack = okb and type(a) == "string" and P.to_json(v) or nil }
          end
          return true, address, tags, described, args
        end
        function H.reencode(address, tags, args)
          local out = {}
          local idx = 0
          for tag in tags:sub(2):gmatch(".") do
            if tag ~= "T" and tag ~= "F" and tag ~= "N" then
              idx = idx + 1
              local a = args[idx]
              out[idx] = (tag == "b") and P.unpack(a) or a
            end
          end
          return P.encode(address, tags, out)
        end
        return H
    """, proto)
    return runtime, proto, helpers


def _pairs_hook(pairs):
    return pairs  # keep key order: a list of (key, value)


def _ordered(value):
    """Golden JSON value -> nested lists of pairs (maps) in key order."""
    return json.loads(json.dumps(value), object_pairs_hook=_pairs_hook)


@pytest.mark.parametrize("entry", GOLDEN, ids=[e["name"] for e in GOLDEN])
def test_lua_decodes_every_golden_message(lua, entry):
    _runtime, _proto, h = lua
    data = bytes.fromhex(entry["hex"])
    ok, address, tags, described, _args = h.decode(data)
    assert ok, address
    assert address.decode() == entry["address"]
    assert tags.decode() == entry["tags"]
    values = [described[i + 1] for i in range(len(entry["args"]))]
    assert len(list(described.values())) == len(entry["args"])
    for got, want in zip(values, entry["args"], strict=True):
        if isinstance(want, dict) and "msgpack" in want:
            assert got[b"msgpack"] is not None, "blob is not msgpack"
            decoded = json.loads(got[b"msgpack"].decode(), object_pairs_hook=_pairs_hook)
            assert decoded == _ordered(want["msgpack"]), "map content and key order"
        elif isinstance(want, str):
            assert got[b"raw"].decode() == want
        else:
            assert got[b"raw"] == want


@pytest.mark.parametrize("entry", GOLDEN, ids=[e["name"] for e in GOLDEN])
def test_lua_reencodes_byte_for_byte(lua, entry):
    _runtime, _proto, h = lua
    data = bytes.fromhex(entry["hex"])
    ok, address, tags, _described, args = h.decode(data)
    assert ok
    assert h.reencode(address, tags, args) == data


def _python_accepts(data: bytes) -> bool:
    from protocol.messages import ProtocolError, decode

    try:
        decode(data)
    except ProtocolError:
        return False
    return True


def test_lua_accepts_exactly_what_python_accepts(lua):
    """Truncated and mutated golden messages: Lua never raises, and accepts a datagram
    exactly when the Python decoder does (a bare address is a valid OSC message)."""
    _runtime, _proto, h = lua
    rng = random.Random(7)
    for entry in GOLDEN:
        data = bytes.fromhex(entry["hex"])
        cases = [data[:cut] for cut in range(0, len(data), 3)]
        for _ in range(20):
            mutated = bytearray(data)
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            cases.append(bytes(mutated))
        for case in cases:
            ok, *_ = h.decode(case)
            assert bool(ok) == _python_accepts(case), (entry["name"], case.hex())


def test_lua_and_python_agree_on_a_fresh_message(lua):
    from protocol.messages import decode, encode, unpack

    _runtime, proto, _h = lua
    payload = {"job": "20261121-120000-0a1b2c3d", "start": 441000, "end": 882000,
               "samplerate": 44100, "start_s": 10.0, "end_s": 20.0, "ok": True,
               "nothing": None, "list": [1, -2, 3.5, "x"]}
    data = encode("/stembridge/job/region", payload)
    address, tags, args = proto.decode(data)
    assert address == b"/stembridge/job/region" and tags == b",b"
    value = proto.unpack(args[1])
    assert proto.to_json(value).decode() == json.dumps(payload, separators=(",", ":"))
    assert json.loads(proto.to_json(value)) == payload
    lua_bytes = proto.encode(b"/stembridge/job/region", b",b", _runtime_table(lua, [value]))
    assert decode(lua_bytes).address == "/stembridge/job/region"
    assert unpack(decode(lua_bytes).args[0]) == payload


def _runtime_table(lua, items):
    runtime, _proto, _h = lua
    return runtime.table_from(items)
