"""The OSC codec (`protocol.osc`), checked without a model or a GPU.

* every golden datagram (tests/golden/messages.json) encodes and decodes byte for byte,
  and python-osc (an independent implementation) reads and builds the same bytes;
* `decode` / `unpack` raise only `ProtocolError`, whatever the bytes.
"""

from __future__ import annotations

import contextlib
import json
import re
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from protocol.messages import (
    MAX_DATAGRAM,
    PUSHES,
    REQUESTS,
    Address,
    Message,
    ProtocolError,
    decode,
    encode,
    pack,
    payload,
    unpack,
)
from tests.golden.vectors import (
    BY_NAME,
    FUZZ,
    GOLDEN,
    NAMES,
    _args,
    _assert_python_osc_agrees,
    _data,
    _osc_string,
    _safe_decode,
)


def test_golden_file_is_well_formed():
    assert len(NAMES) == len(set(NAMES))
    for entry in GOLDEN:
        assert list(entry) == ["name", "direction", "address", "tags", "args", "hex"]
        assert re.fullmatch(r"[a-z_]+", entry["name"])
        assert entry["direction"] == ("request" if entry["address"] in REQUESTS else "push")
        assert entry["address"] in REQUESTS | PUSHES
        assert entry["tags"].startswith(",") and len(entry["tags"]) == len(entry["args"]) + 1
        assert set(entry["tags"][1:]) <= set("ifsb")
        assert entry["hex"] == entry["hex"].lower() and len(entry["hex"]) % 8 == 0
    assert len(json.dumps(GOLDEN)) < 17_000  # stays reviewable (16k before the master messages)


@pytest.mark.parametrize("name", NAMES)
def test_encode_matches_golden(name):
    entry = BY_NAME[name]
    assert encode(entry["address"], *_args(entry)) == _data(entry)


@pytest.mark.parametrize("name", NAMES)
def test_decode_matches_golden(name):
    entry = BY_NAME[name]
    msg = decode(_data(entry))
    assert msg.address == entry["address"]
    assert len(msg.args) == len(entry["args"])
    for tag, got, want in zip(entry["tags"][1:], msg.args, entry["args"], strict=True):
        if tag == "b":
            assert isinstance(got, bytes)
            body = unpack(got)
            assert body == want["msgpack"]
            assert list(body) == list(want["msgpack"])  # key order as documented
        else:
            assert type(got) is {"i": int, "f": float, "s": str}[tag]
            assert got == want  # floats: the JSON value is the exact float32


@pytest.mark.parametrize("name", NAMES)
def test_python_osc_reads_and_builds_the_same_bytes(name):
    entry = BY_NAME[name]
    data = _data(entry)
    theirs = OscMessage(data)
    assert theirs.address == entry["address"]
    assert len(theirs.params) == len(entry["args"])
    builder = OscMessageBuilder(entry["address"])
    for tag, got, want in zip(entry["tags"][1:], theirs.params, entry["args"], strict=True):
        if tag == "b":
            assert unpack(got) == want["msgpack"]
            builder.add_arg(pack(want["msgpack"]), "b")
        else:
            assert got == want
            builder.add_arg(want, tag)
    assert builder.build().dgram == data




@pytest.mark.parametrize("name", NAMES)
def test_truncated_datagrams_are_rejected(name):
    entry = BY_NAME[name]
    data = _data(entry)
    address_only = len(_osc_string(entry["address"]))
    for n in range(len(data)):
        msg = _safe_decode(data[:n])
        if msg is not None:  # only the bare address is a valid (old-style) prefix
            assert n == address_only and msg == Message(entry["address"], ())


@pytest.mark.parametrize("name", NAMES)
def test_odd_lengths_and_trailing_bytes_are_rejected(name):
    data = _data(BY_NAME[name])
    for extra in (b"\0", b"\0\0", b"\0\0\0", b"\0\0\0\0", b"\0\0\0\1"):
        with pytest.raises(ProtocolError):
            decode(data + extra)


@pytest.mark.parametrize("tag", list("hdtcrmS[]?I0") + ["é"])
def test_unsupported_type_tags_are_rejected(tag):
    data = _osc_string("/stembridge/ping") + _osc_string("," + tag) + struct.pack(">q", 1)
    with pytest.raises(ProtocolError):
        decode(data)


@pytest.mark.parametrize("tags,body", [
    (",ii", struct.pack(">i", 1)),          # more tags than arguments
    (",", struct.pack(">i", 1)),            # fewer tags than arguments
    (",b", struct.pack(">i", 1)),           # an int read as a blob size, no bytes follow
    (",s", b"abcd"),                        # unterminated string argument
    (",sb", _osc_string("x")),              # blob missing
    (",f", b""),                            # float missing
])
def test_type_tags_that_do_not_match_the_arguments_are_rejected(tags, body):
    with pytest.raises(ProtocolError):
        decode(_osc_string("/stembridge/ping") + _osc_string(tags) + body)


def test_mismatched_type_tags_never_raise_anything_else():
    for entry in GOLDEN:
        data, n = _data(entry), len(entry["tags"]) - 1
        start = len(_osc_string(entry["address"])) + 1  # first tag after the ','
        rotated = entry["tags"][2:] + entry["tags"][1:2]
        for tags in {rotated, "i" * n, "f" * n, "s" * n, "b" * n, "T" * n, "N" * n}:
            _safe_decode(data[:start] + tags.encode() + data[start + n:])


@pytest.mark.parametrize("size", [5, 8, 1000, MAX_DATAGRAM, 2**31 - 1])
def test_blob_size_larger_than_the_datagram_is_rejected(size):
    data = bytearray(encode("/stembridge/split", b"abcd"))
    data[-8:-4] = struct.pack(">i", size)
    with pytest.raises(ProtocolError):
        decode(bytes(data))


@pytest.mark.parametrize("size", [-1, -4, -(2**31)])
def test_negative_blob_size_is_rejected(size):
    data = bytearray(encode("/stembridge/split", b"abcd"))
    data[-8:-4] = struct.pack(">i", size)
    with pytest.raises(ProtocolError):
        decode(bytes(data))


@pytest.mark.parametrize("data", [
    _osc_string(b"/st\xffmbridge") + _osc_string(","),                      # address
    _osc_string("/stembridge/cancel") + _osc_string(",s") + _osc_string(b"\xc3\x28"),
    _osc_string("/stembridge/cancel") + _osc_string(b",s\xe9") + _osc_string("x"),  # tags
])
def test_non_utf8_strings_are_rejected(data):
    with pytest.raises(ProtocolError, match="UTF-8"):
        decode(data)


def test_missing_type_tag_string():
    address = _osc_string("/stembridge/ping")
    for body in (struct.pack(">i", 1), _osc_string("i") + struct.pack(">i", 1),
                 _osc_string("hello")):
        with pytest.raises(ProtocolError):
            decode(address + body)
    # A bare address (old-style OSC without type tags) is a message without arguments.
    assert decode(address) == Message("/stembridge/ping", ())


@pytest.mark.parametrize("data", [
    None, "/stembridge/ping", 12, [1, 2], memoryview(b"/abc\0\0\0\0,\0\0\0"),
    b"", b"/", b"/abc", b"/abcdefg", b"/abcdefghijk",     # short / unterminated
    b"abc\0,\0\0\0", b"\0\0\0\0,\0\0\0",                     # address without '/'
    b"#bundle\0" + bytes(8) + encode("/stembridge/ping", 1),  # bundles are not supported
])
def test_not_a_message(data):
    with pytest.raises(ProtocolError):
        decode(data)


def test_datagram_size_limit():
    overhead = len(_osc_string("/x") + _osc_string(",b")) + 4
    largest = encode("/x", bytes(MAX_DATAGRAM - overhead))
    assert len(largest) == MAX_DATAGRAM
    assert decode(largest).args == (bytes(MAX_DATAGRAM - overhead),)
    with pytest.raises(ProtocolError):
        encode("/x", bytes(MAX_DATAGRAM - overhead + 1))
    too_big = largest[:overhead - 4] + struct.pack(">i", MAX_DATAGRAM - overhead + 4) + bytes(
        MAX_DATAGRAM - overhead + 4)
    assert len(too_big) == MAX_DATAGRAM + 4
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(too_big)


def test_bool_and_nil_arguments_round_trip():
    data = encode("/stembridge/x", True, False, None, 0, -(2**31), 2**31 - 1, "", b"")
    assert data == (_osc_string("/stembridge/x") + _osc_string(",TFNiiisb") + bytes(4)
                    + struct.pack(">ii", -(2**31), 2**31 - 1) + bytes(8))
    msg = decode(data)
    assert msg.args == (True, False, None, 0, -(2**31), 2**31 - 1, "", b"")
    _assert_python_osc_agrees(data, msg)
    with pytest.raises(ProtocolError):
        encode("/x", 2**31)
    with pytest.raises(ProtocolError):
        encode("/x", "nul\0inside")


@FUZZ
@given(st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=200).map(lambda b: b"/stembridge/x\0\0\0," + b),
    st.lists(st.sampled_from([b"/s\0\0", b",ibs", b",\0\0\0", b"\0\0\0\4", b"\xff\xff\xff\xff",
                              b"abc\0", b"\x81\xa1a\x01", b"\0\0\0\0"]), max_size=12
             ).map(b"".join),
))
def test_decode_random_bytes_raises_only_protocol_error(data):
    msg = _safe_decode(data)
    if msg is not None:
        _assert_python_osc_agrees(data, msg)


@FUZZ
@given(st.sampled_from(NAMES), st.data())
def test_decode_mutated_golden_raises_only_protocol_error(name, draw):
    data = bytearray(_data(BY_NAME[name]))
    for _ in range(draw.draw(st.integers(1, 4))):
        op = draw.draw(st.sampled_from(["flip", "set", "delete4", "insert4", "cut"]))
        pos = draw.draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw.draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw.draw(st.sampled_from([0, 0x2C, 0x2F, 0x7F, 0x80, 0xC1, 0xFF]))
        elif op == "delete4":
            del data[pos - pos % 4:pos - pos % 4 + 4]
        elif op == "insert4":
            data[pos - pos % 4:pos - pos % 4] = draw.draw(st.binary(min_size=4, max_size=4))
        elif op == "cut":
            del data[pos:]
    msg = _safe_decode(bytes(data))
    if msg is not None:
        _assert_python_osc_agrees(bytes(data), msg)


# --------------------------------------------------------------------------- unpack


@pytest.mark.parametrize("blob", [
    b"", b"\xc1", b"\x81\xa1a", b"\x81\xa1a\x01\x00", pack({"a": 1}) + b"\x80",  # bad msgpack
    b"\x81\x01\xa1a",                                                           # int key
    b"\xdf\xff\xff\xff\xff",                                                    # huge map, no data
    pack([1, 2]), pack(1), pack("text"), pack(None), pack(b"raw"), pack(1.5),  # not a map
    None, "text", 5, [1], {"a": 1}, memoryview(pack({"a": 1})),               # not bytes
])
def test_unpack_rejects(blob):
    with pytest.raises(ProtocolError):
        unpack(blob)


def test_unpack_and_payload():
    assert unpack(bytearray(pack({"a": [1, 2.5, None, True]}))) == {"a": [1, 2.5, None, True]}
    with pytest.raises(ProtocolError, match="payload blob"):
        payload(Message(Address.SPLIT, ()))
    with pytest.raises(ProtocolError):
        payload(Message(Address.SPLIT, ("not a blob",)))


def test_unpack_rejects_binary_keys():
    with pytest.raises(ProtocolError):
        unpack(pack({b"source": "/a.wav"}))


@FUZZ
@given(st.binary(max_size=200))
def test_unpack_random_bytes_raises_only_protocol_error(blob):
    with contextlib.suppress(ProtocolError):
        assert isinstance(unpack(blob), dict)


@pytest.mark.parametrize("arg", [1e39, {"x": object()}, {"x": 2**70}])
def test_encode_raises_only_protocol_error(arg):
    with pytest.raises(ProtocolError):
        encode("/stembridge/x", arg)


# --------------------------------------------------------------------------- SplitRequest

GOOD = {"request_id": 7, "source": "/home/user/Music/song.wav"}




# --------------------------------------------------------------------------- why our own codec


def test_python_osc_is_lenient_where_our_codec_refuses():
    """The measured reasons for `protocol.osc` (python-osc is only a test dependency):
    its parser raises UnicodeDecodeError (not its ParseError) on a non-UTF-8 address,
    accepts trailing bytes and reads a negative blob size as an empty blob; ours answers
    each with `ProtocolError`, which the server turns into a `bad_message` reply."""
    from pythonosc.osc_message import ParseError

    non_utf8 = b"/st\xffx\x00\x00\x00,\x00\x00\x00"
    with pytest.raises(UnicodeDecodeError):
        OscMessage(non_utf8)
    assert not issubclass(UnicodeDecodeError, ParseError)
    with pytest.raises(ProtocolError, match="UTF-8"):
        decode(non_utf8)

    trailing = encode("/stembridge/ping", 1) + b"\x00\x00\x00\x07"
    assert OscMessage(trailing).params == [1]
    with pytest.raises(ProtocolError, match="trailing"):
        decode(trailing)

    negative = bytearray(encode("/stembridge/split", b"abcd"))
    negative[-8:-4] = struct.pack(">i", -4)
    assert OscMessage(bytes(negative)).params == [b""]
    with pytest.raises(ProtocolError, match="blob size"):
        decode(bytes(negative))
