"""ARCHITECTURE.md's import rules, enforced: protocol imports nothing of ours, engine may
import protocol only, bridge may import both; and no heavy work at import time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = {"protocol", "engine", "bridge"}
ALLOWED = {"protocol": set(), "engine": {"protocol"}, "bridge": {"protocol", "engine"}}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & OURS


def test_layering():
    violations = []
    for package, allowed in ALLOWED.items():
        for path in (ROOT / package).rglob("*.py"):
            bad = _imports(path) - allowed - {package}
            if bad:
                violations.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not violations, "\n".join(violations)


def test_architecture_doc_states_the_rules():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for package in ALLOWED:
        assert f"`{package}`" in text


def test_no_torch_at_import_time():
    code = ("import sys, bridge.cli, engine, engine.separator, engine.audio, engine.chunking, "
            "engine.models.registry, protocol.errors; "
            "bad = [m for m in ('torch', 'demucs', 'scipy', 'soundfile') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
