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


#: The client side: what a DAW script's `stembridge submit`, `ping` or `stop` runs. It
#: talks only through the protocol, so it never imports the engine (nor torch).
CLIENT_MODULES = ("bridge.client", "bridge.discovery", "bridge.udp", "bridge.commands.client",
                  "bridge.commands.report", "bridge.preview")


def test_client_side_never_imports_the_engine():
    for module in CLIENT_MODULES:
        path = ROOT / (module.replace(".", "/") + ".py")
        if not path.exists():
            path = ROOT / module.replace(".", "/") / "__init__.py"
        assert "engine" not in _imports(path), f"{module} imports the engine"
    code = (f"import sys; import {', '.join(CLIENT_MODULES)}; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('engine', 'torch', 'numpy')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr


#: One module per stage: no source file far beyond ~500 lines.
MAX_LINES = 600


def test_no_module_is_far_beyond_500_lines():
    sources = [p for package in ("protocol", "engine", "bridge") for p in
               (ROOT / package).rglob("*.py")] + list((ROOT / "clients").rglob("*.lua"))
    assert len(sources) > 40
    long = {str(p.relative_to(ROOT)): n for p in sources
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these modules by stage: {long}"


def test_architecture_doc_names_every_module():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    tree = text.split("## Layout", 1)[1].split("```")[1]
    missing = [str(p.relative_to(ROOT)) for package in ("protocol", "engine", "bridge")
               for p in (ROOT / package).rglob("*.py")
               if p.name not in ("__init__.py",) and p.name not in tree]
    missing += [str(p.relative_to(ROOT))
                for p in (ROOT / "clients" / "reaper" / "Stems" / "lib").glob("*.lua")
                if p.name not in tree]
    assert not missing, f"ARCHITECTURE.md's tree lacks {missing}"
