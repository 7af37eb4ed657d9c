"""Stem subsets (`only`, `rest`): the plan, the request's checks, a split through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.errors import StembridgeError
from engine.stems import plan_stems
from protocol.errors import ErrorCode
from protocol.messages import SplitRequest
from protocol.osc import ProtocolError

FOUR_SRC = ("drums", "bass", "other", "vocals")
SIX_SRC = ("drums", "bass", "other", "vocals", "guitar", "piano")


def test_subset_keeps_the_rest_in_other_or_drops_it() -> None:
    keep = plan_stems("htdemucs", FOUR_SRC, None, ["drums", "vocals"])
    assert keep.names == ("vocals", "drums", "other")
    assert keep.sources == ((3,), (0,), (1, 2))  # bass + other into other
    drop = plan_stems("htdemucs", FOUR_SRC, None, ["drums", "vocals"], "drop")
    assert drop.names == ("vocals", "drums") and drop.sources == ((3,), (0,))
    # of vocals + instrumental, the stem left out keeps its name
    assert plan_stems("htdemucs", FOUR_SRC, 2, ["vocals"]).names == ("vocals", "instrumental")
    assert plan_stems("htdemucs", FOUR_SRC, 2, ["instrumental"], "drop").sources == ((0, 1, 2),)
    # a 6-stem model asked for 4 stems, then other + vocals: guitar and piano in other
    six = plan_stems("htdemucs_6s", SIX_SRC, 4, ["other", "vocals"])
    assert six.names == ("vocals", "other") and six.sources == ((3,), (0, 1, 2, 4, 5))
    assert keep.config_id() != drop.config_id()  # the cache tells them apart
    with pytest.raises(StembridgeError, match="not piano") as err:
        plan_stems("htdemucs", FOUR_SRC, None, ["piano"])
    assert err.value.code == ErrorCode.STEMS_UNSUPPORTED


def test_request_fields_are_checked_and_travel() -> None:
    req = SplitRequest(source="/a.wav", only=["vocals", "drums"], rest="drop", request_id=4)
    back = SplitRequest.from_payload(req.to_payload())
    assert back.only == ["vocals", "drums"] and back.rest == "drop"
    assert "only" not in SplitRequest(source="/a.wav", request_id=1).to_payload()
    bads: list[dict[str, object]] = [{"only": []}, {"only": ["vocals", "vocals"]},
                                     {"rest": "sum"}]
    for bad in bads:
        with pytest.raises(ProtocolError):
            SplitRequest.from_payload({"source": "/a.wav", "request_id": 1, **bad})


def test_cli_split_subset(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import soundfile as sf

    from bridge.cli import main
    from engine.models import testmodels

    root = tmp_path / "models"
    testmodels.make_test_mdx("mdx-voc-ft", root, seed=1)
    rng = np.random.default_rng(1)
    src = tmp_path / "in.wav"
    sf.write(src, (0.2 * rng.standard_normal((20000, 2))).astype(np.float32), 44100,
             subtype="FLOAT")
    common = ["--model", "mdx-voc-ft", "--models-dir", str(root), "--precision", "fp32"]
    assert main(["split", str(src), "--stems", "vocals", "--rest", "drop",
                 "--out", str(tmp_path / "a"), *common]) == 0
    folder = tmp_path / "a" / "in"
    assert sorted(p.name for p in folder.glob("*.wav")) == ["vocals.wav"]
    meta = json.loads((folder / "stems.json").read_text())
    assert [s["name"] if isinstance(s, dict) else s for s in meta["stems"]] == ["vocals"]
    assert main(["split", str(src), "--stems", "vocals,drums", "--out", str(tmp_path / "c"),
                 *common]) == 7  # STEMS_UNSUPPORTED: the model gives no drums
