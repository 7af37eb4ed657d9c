"""The on-disk cache of compiled forwards: keyed, checked, damaged files rebuilt."""

from __future__ import annotations

import os

import pytest

from engine.artifacts import MAGIC, ArtifactCache, key_digest, weights_digest

KEY = {"model": "htdemucs", "version": "1", "shape": [1, 2, 343980], "precision": "bf16",
       "versions": {"torch": "2.13.0"}}


def test_round_trip_and_atomic_layout(tmp_path):
    cache = ArtifactCache(tmp_path / "compiled")
    assert cache.read(KEY) is None  # absent folder: absent entry
    path = cache.write(KEY, b"payload" * 100)
    assert path.parent == tmp_path / "compiled" and path.name.startswith("htdemucs-")
    assert path.read_bytes().startswith(MAGIC)
    assert cache.read(KEY) == b"payload" * 100
    assert os.listdir(path.parent) == [path.name]  # no temporary file left behind


@pytest.mark.parametrize("field,value", [("precision", "fp32"), ("shape", [1, 2, 100]),
                                         ("versions", {"torch": "2.14.0"})])
def test_a_changed_key_is_a_different_entry(tmp_path, field, value):
    cache = ArtifactCache(tmp_path)
    cache.write(KEY, b"old")
    other = {**KEY, field: value}
    assert key_digest(other) != key_digest(KEY)
    assert cache.read(other) is None
    cache.write(other, b"new")
    assert cache.read(other) == b"new" and cache.read(KEY) == b"old"


def _damage(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[:-5])
    elif how == "flipped":
        path.write_bytes(data[:-3] + bytes([data[-3] ^ 0xFF]) + data[-2:])
    elif how == "header":
        path.write_bytes(MAGIC + b"{not json\n" + data[len(MAGIC):])
    elif how == "magic":
        path.write_bytes(b"X" + data[1:])
    elif how == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize("how", ["truncated", "flipped", "header", "magic", "empty"])
def test_a_damaged_file_is_deleted_not_trusted(tmp_path, how):
    cache = ArtifactCache(tmp_path)
    path = cache.write(KEY, bytes(range(256)) * 40)
    _damage(path, how)
    assert cache.read(KEY) is None
    assert not path.exists()  # deleted, so the next build writes a fresh one
    cache.write(KEY, b"rebuilt")
    assert cache.read(KEY) == b"rebuilt"


def test_a_file_for_another_key_under_this_name_is_refused(tmp_path):
    cache = ArtifactCache(tmp_path)
    other = {**KEY, "precision": "fp32"}
    cache.write(other, b"fp32 code")
    os.replace(cache.path(other), cache.path(KEY))  # e.g. copied by hand
    assert cache.read(KEY) is None


def test_weights_digest_sees_every_weight():
    import torch

    torch.manual_seed(0)
    a = torch.nn.Conv1d(2, 3, 5)
    b = torch.nn.Conv1d(2, 3, 5)
    b.load_state_dict(a.state_dict())
    assert weights_digest(a) == weights_digest(b)
    with torch.no_grad():
        b.bias[1] += 1e-6
    assert weights_digest(a) != weights_digest(b)
