"""The generated parts of the contract: messages.json and PROTOCOL.md's examples and
reference sections are reproduced exactly by their generators; every address, error code
and field is documented; no bare error-code string remains in bridge/.
"""

from __future__ import annotations

import re
import shutil

import pytest

from protocol import PROTOCOL_VERSION
from protocol.errors import ErrorCode
from protocol.messages import (
    MAX_DATAGRAM,
    PUSHES,
    REQUESTS,
    SplitRequest,
)
from tests.golden.vectors import (
    ADDRESSES,
    DOC,
    GOLDEN,
    GOLDEN_DIR,
    ROOT,
    _load_generator,
)


def test_generator_reproduces_golden_and_doc(tmp_path):
    doc = tmp_path / "PROTOCOL.md"
    shutil.copyfile(ROOT / "PROTOCOL.md", doc)
    assert _load_generator().main(["--out", str(tmp_path), "--doc", str(doc)]) == 0
    assert (tmp_path / "messages.json").read_bytes() == (GOLDEN_DIR / "messages.json").read_bytes()
    assert doc.read_bytes() == (ROOT / "PROTOCOL.md").read_bytes(), (
        "PROTOCOL.md examples are stale: run python tests/golden/make_golden.py")


def test_generator_rejects_a_doc_without_every_example(tmp_path):
    gen = _load_generator()
    text = DOC.replace("<!-- golden: pong -->", "<!-- removed -->")
    with pytest.raises(SystemExit, match="pong"):
        gen.update_doc(text, gen.entries())


# --------------------------------------------------------------------------- PROTOCOL.md


def test_every_address_has_a_golden_example_and_a_section():
    assert ADDRESSES == REQUESTS | PUSHES
    assert {e["address"] for e in GOLDEN} == ADDRESSES
    headings = [line for line in DOC.splitlines() if line.startswith("### ")]
    for address in ADDRESSES:
        assert any(f"`{address}`" in h for h in headings), f"no section for {address}"
        assert f"| `{address}` |" in DOC, f"{address} missing from the message table"


def test_every_golden_example_is_in_the_doc():
    gen = _load_generator()
    for entry in GOLDEN:
        assert f"<!-- golden: {entry['name']} -->\n{gen.example_block(entry)}\n" in DOC


def test_every_error_code_is_documented():
    for code in ErrorCode:
        assert f"| `{code.value}` |" in DOC, f"error code {code.value!r} is not in PROTOCOL.md"


#: Where our own code names an error code: ``code=...``, ``ClientError(...``,
#: ``ErrorMsg(..., ...,`` / ``_error(addr,`` / ``fail(rec,`` arguments, comparisons.
_CODE_CONTEXT = re.compile(
    r"(?:code\s*=\s*|ClientError\(\s*|_error\([^,()]+,\s*|fail\([^,()]+,\s*|"
    r"code\s*(?:==|!=|in)\s*\(?\s*)[\"']([a-z_]+)[\"']")
#: Every module of the server, the client side, the commands, the preview and protocol/.
OWN = sorted(str(p.relative_to(ROOT)) for package in ("bridge", "protocol")
             for p in (ROOT / package).rglob("*.py"))


def test_no_bare_error_code_strings_remain():
    """Every code the server and client send is an `ErrorCode` member, never a string
    literal (a typo would go out on the wire unnoticed)."""
    found = []
    assert len(OWN) > 30
    for rel in OWN:
        text = (ROOT / rel).read_text(encoding="utf-8")
        found += [f"{rel}: {m.group(0)!r}" for m in _CODE_CONTEXT.finditer(text)]
    assert not found, "bare error-code strings: " + "; ".join(found)


def test_the_code_pattern_finds_bare_codes():
    samples = ['self._error(addr, "bad_message", "x")', 'raise ClientError("timeout", "x")',
               'ProtocolError("x", code="invalid_argument")', 'fail(rec, "internal", msg)',
               'if err.code in ("timeout", "not_running"):']
    assert all(_CODE_CONTEXT.search(s) for s in samples)
    assert not _CODE_CONTEXT.search('self._error(addr, ErrorCode.BAD_MESSAGE, "x")')


def test_reference_sections_are_current():
    from protocol import doc

    assert doc.update(DOC) == DOC, "PROTOCOL.md is stale: run python -m protocol.doc"
    assert doc.main([str(ROOT / "PROTOCOL.md"), "--check"]) == 0
    for code, meaning in doc.MEANINGS.items():
        assert f"| `{code.value}` | {doc.CODES[code].exit_status} |" in DOC, meaning
    for name in doc.sections():
        assert f"<!-- reference: {name} -->" in DOC


def test_reference_generator_rejects_a_doc_without_a_section():
    from protocol import doc

    with pytest.raises(SystemExit, match="Manifest"):
        doc.update(DOC.replace("<!-- reference: Manifest -->", "<!-- removed -->"))


def test_doc_states_version_limits_and_fields():
    from bridge.jobs import JobRecord
    from bridge.server import DEFAULT_PORT, ServerConfig

    assert f"# stembridge protocol, version {PROTOCOL_VERSION}" in DOC
    assert f"{MAX_DATAGRAM} bytes" in DOC and str(DEFAULT_PORT) in DOC
    assert f"{ServerConfig().max_jobs_per_client} queued or running jobs" in DOC
    from dataclasses import fields

    for name in (f.name for f in fields(SplitRequest)):
        assert f"| `{name}` |" in DOC, name
    assert JobRecord.__dataclass_fields__["state"].default == "queued"
    for state in ("queued", "running", "done", "failed", "cancelled"):
        assert f"`{state}`" in DOC
    for key in ("host", "port", "pid", "version", "protocol", "started", "token_required",
                "output_root", "format", "overlap", "device"):
        assert f"| `{key}` |" in DOC
    assert "## Shared memory" in DOC and "seqlock" in DOC and "STBI" in DOC


# --------------------------------------------------------------------------- decode: robustness

