"""engine.audio as a package: the public API every caller imports, and the rules of the
audio stage (no environment variables read, no heavy imports at import time)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import engine.audio
from engine.audio import channels, decoder, header, limits, resampler, validation, writer
from protocol import files

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "engine" / "audio"

#: What callers (engine, bridge, bench, tests) import from engine.audio, and where it lives.
PUBLIC = {
    "AudioInfo": engine.audio.info,
    "DecodedAudio": engine.audio.info,
    "probe": header,
    "check_info": limits,
    "decode": decoder,
    "load": decoder,
    "validate": validation,
    "SILENCE_DBFS": validation,
    "CLIP_LEVEL": validation,
    "CLIP_MIN_COUNT": validation,
    "CLIP_MIN_FRACTION": validation,
    "to_model_channels": channels,
    "from_model_channels": channels,
    "resample": resampler,
    "resampled_length": resampler,
    "RegionResampler": resampler,
    "write_audio": writer,
    "StemFileWriter": writer,
    "remove_stale_temp_files": writer,
    "PCM_MAX": writer,
    "TEMP_PREFIX": files,
    "find_ffmpeg": engine.audio.ffmpeg,
}


def test_public_api_is_the_stage_modules() -> None:
    assert set(engine.audio.__all__) == set(PUBLIC)
    for name, module in PUBLIC.items():
        assert getattr(engine.audio, name) is getattr(module, name), name


def test_every_stage_module_is_small_and_documented() -> None:
    for path in PACKAGE.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert len(text.splitlines()) <= 500, path.name
        assert ast.get_docstring(ast.parse(text)), f"{path.name} has no module docstring"


def test_no_environment_variables_in_the_audio_stage() -> None:
    """Limits come from engine.config (protocol.settings, read when a config is created);
    messages say what is wrong, the hint table how to fix it (env vars, CLI flags)."""
    for path in PACKAGE.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        for word in ("os.environ", "getenv", "STEMBRIDGE_", "protocol.settings"):
            assert word not in text, f"{path.name} mentions {word!r}"
        flags = re.findall(r"--[a-z][a-z-]*", text)  # our CLI's flags: --device, --max-...
        assert not flags, f"{path.name} names CLI flags {flags}"


def test_import_loads_no_decoder_or_scipy() -> None:
    code = (
        "import sys, engine.audio; "
        "from engine.audio import channels, container, decoder, ffmpeg, header, info, "
        "limits, resampler, validation, writer; "
        "print(sorted(m for m in ('soundfile', 'scipy', 'torch') if m in sys.modules))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
