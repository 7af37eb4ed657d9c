"""`models fetch` for MDX-Net and RoFormer files over plain HTTP: against a real HTTP
server on 127.0.0.1 (the STEMBRIDGE_MODELS_MIRROR setting points at it) serving test
models: the right file, a wrong checksum, a truncated download, a server that is gone."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import ModelError
from engine.models import hub, manifest, testmodels
from protocol.errors import ErrorCode

pytest.importorskip("onnx")


class _Handler(http.server.SimpleHTTPRequestHandler):
    truncate: set[str] = set()

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if any(self.path.endswith(t) for t in self.truncate):
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("served")
    testmodels.make_test_mdx("kim-vocal-2", root, seed=4)
    testmodels.make_test_mdx("mdx-voc-ft", root, seed=5)
    testmodels.make_test_roformer("bs-roformer-viperx-1297", root, seed=6)

    def handler(*args: object, **kw: object) -> _Handler:
        return _Handler(*args, directory=str(root), **kw)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


@pytest.fixture()
def mirror(served: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    monkeypatch.delenv("STEMBRIDGE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("STEMBRIDGE_MODELS_MIRROR", served[0])
    return served


def test_fetch_writes_the_files_and_a_manifest(mirror: tuple[str, Path], tmp_path: Path) -> None:
    _, root = mirror
    folder = hub.fetch("bs-roformer-viperx-1297", tmp_path)
    for name in ("model_bs_roformer_ep_317_sdr_12.9755.ckpt",
                 "model_bs_roformer_ep_317_sdr_12.9755.yaml"):
        assert (folder / name).read_bytes() == (root / folder.name / name).read_bytes()
    recorded = manifest.read(folder)
    assert recorded is not None and not recorded.mismatches(folder, list(folder.iterdir()))
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temporary folder left


def test_a_wrong_checksum_installs_nothing(mirror: tuple[str, Path], tmp_path: Path) -> None:
    # mdx-voc-ft has UVR's sha256 recorded; the server has a test model under that name
    with pytest.raises(ModelError, match="sha256") as err:
        hub.fetch("mdx-voc-ft", tmp_path)
    assert err.value.code == ErrorCode.MODEL_CORRUPT
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_download_installs_nothing(mirror: tuple[str, Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    existing = tmp_path / "kim-vocal-2"
    existing.mkdir()
    (existing / "keep.txt").write_text("an earlier install stays as it was")
    monkeypatch.setattr(_Handler, "truncate", {"Kim_Vocal_2.onnx"})
    with pytest.raises(ModelError, match="stopped after 1000 of 1000000") as err:
        hub.fetch("kim-vocal-2", tmp_path)
    assert err.value.code == ErrorCode.MODEL_NOT_INSTALLED
    assert [p.name for p in tmp_path.iterdir()] == ["kim-vocal-2"]
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]


def test_a_server_that_is_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.delenv("STEMBRIDGE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("STEMBRIDGE_MODELS_MIRROR", f"http://127.0.0.1:{port}")
    with pytest.raises(ModelError, match="Could not download") as err:
        hub.fetch("kim-vocal-2", tmp_path)
    assert err.value.code == ErrorCode.MODEL_NOT_INSTALLED
    assert list(tmp_path.iterdir()) == []


def test_offline_setting_refuses_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEMBRIDGE_OFFLINE", "1")
    with pytest.raises(ModelError, match="turned off"):
        hub.fetch("kim-vocal-2", tmp_path)


def test_cli_fetch_then_list(mirror: tuple[str, Path], tmp_path: Path) -> None:
    """A file without a recorded sha256 (Kim Vocal 2) is kept, its sha256 recorded; the
    model list then shows it installed (splitting with an MDX-Net model: test_mdx)."""
    env = {k: v for k, v in os.environ.items() if k not in ("STEMBRIDGE_OFFLINE",
                                                             "HF_HUB_OFFLINE")}
    env.update(STEMBRIDGE_MODELS_MIRROR=mirror[0], STEMBRIDGE_MODELS_DIR=str(tmp_path / "m"),
               STEMBRIDGE_CACHE_DIR=str(tmp_path / "cache"))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True,
                              text=True, env=env, timeout=180)

    got = cli("models", "fetch", "kim-vocal-2")
    assert got.returncode == 0, got.stderr
    folder = tmp_path / "m" / "kim-vocal-2"
    recorded = manifest.read(folder)
    assert recorded is not None and recorded.sha256("Kim_Vocal_2.onnx") == manifest.sha256_file(
        mirror[1] / "kim-vocal-2" / "Kim_Vocal_2.onnx")
    rows = {r["name"]: r for r in json.loads(cli("models", "list", "--json").stdout)}
    assert rows["kim-vocal-2"]["installed"] == str(folder)
    assert rows["kim-vocal-2"]["scores"][0]["benchmark"].startswith("MUSDB18-HQ")


@pytest.mark.slow
def test_make_test_model_writes_every_new_family(tmp_path: Path) -> None:
    import torch

    from engine.models import registry

    for name in ("mdx-inst-hq3", "bs-roformer-sw"):
        folder = testmodels.make_test_model(name, tmp_path, seed=3)
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            [*registry.get_spec(name).files, "manifest.json"]
            + (["UVR-MDX-NET-Inst_HQ_3.yaml"] if name.startswith("mdx") else []))
        model = registry.load(name, torch.device("cpu"), tmp_path)
        assert model.spec.name == name
