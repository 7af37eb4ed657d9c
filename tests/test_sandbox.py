"""No test reads or writes the user's real cache, runtime or models folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import _SANDBOX, USER_DIR_VARS


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def test_every_user_folder_points_into_the_sandbox(tmp_path_factory):
    from protocol import settings

    roots = (_SANDBOX["root"], tmp_path_factory.getbasetemp())
    for folder in (settings.cache_root(), settings.runtime_dir(), settings.models_dir(),
                   settings.output_root(), Path.home()):
        assert any(_inside(folder, r) for r in roots), folder  # type: ignore[arg-type]
    for real in _SANDBOX["real"]:  # type: ignore[union-attr]
        assert not _inside(real, _SANDBOX["root"])  # type: ignore[arg-type]


def test_processes_started_by_tests_inherit_the_sandbox(tmp_path_factory):
    code = ("import json; from protocol import settings as s; print(json.dumps([str(p) for p "
            "in (s.cache_root(), s.runtime_dir(), s.models_dir(), s.output_root())]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[1]).stdout
    roots = (_SANDBOX["root"], tmp_path_factory.getbasetemp())
    assert all(any(_inside(Path(p), r) for r in roots)  # type: ignore[arg-type]
               for p in json.loads(out))
    home_vars = [v for v in USER_DIR_VARS if v != "STEMBRIDGE_CACHE_DIR"
                 and v != "STEMBRIDGE_MODELS_DIR"]  # these two the autouse fixture sets
    assert all(os.environ[v].startswith(str(_SANDBOX["root"])) for v in home_vars)
