"""The Ardour client's files without Ardour: `stembridge install-daw ardour` and the
generated Lua constants (the same table as the REAPER scripts', Lua 5.3 compatible)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bridge.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]


def test_install_daw_puts_the_scripts_in_ardours_folder_and_keeps_the_users_files(
        tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "ardour7" / "scripts").mkdir(parents=True)
    (tmp_path / "ardour6").mkdir()
    mine = tmp_path / "ardour7" / "scripts" / "mine.lua"
    mine.write_text("-- mine")
    assert cli_main(["install-daw", "ardour"]) == 0
    scripts = tmp_path / "ardour7" / "scripts"
    assert mine.read_text() == "-- mine"
    shipped = sorted(p.relative_to(ROOT / "clients" / "ardour" / "scripts")
                     for p in (ROOT / "clients" / "ardour" / "scripts").rglob("*.lua"))
    for rel in shipped:
        assert (scripts / rel).read_bytes() == (ROOT / "clients/ardour/scripts" / rel).read_bytes()
    assert {"stembridge_split_4.lua", "stembridge_split_2.lua", "stembridge_cancel.lua",
            "stembridge_follow.lua"} <= {p.name for p in scripts.iterdir()}


def test_install_daw_into_an_unwritable_folder_says_so(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("not a folder")
    assert cli_main(["install-daw", "ardour", "--dir", str(target)]) == 10
    assert "cannot write into" in capsys.readouterr().err


def test_ardour_constants_are_current():
    proc = subprocess.run([sys.executable, "clients/ardour/make_constants.py", "--check"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = (ROOT / "clients/ardour/scripts/stembridge/constants.lua").read_text()
    # Lua 5.3 has no <const>/<close> attributes and no integer-for quirks we rely on.
    assert "<const>" not in text and "<close>" not in text
    assert 'MODEL_NOT_INSTALLED = "model_not_installed"' in text
