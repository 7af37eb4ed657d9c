"""`stembridge master --request FILE`: a master (or an analysis) for a client without
sockets, e.g. the REAPER scripts, through three files beside the request:

``FILE`` (``<id>.json``, written by the client)
    ``{"source": abs path, "mode": "master" | "analyze", "out_dir": abs path,
    "preset", "platform", "reference", "target_lufs", "true_peak_db", "amount",
    "format", "bit_depth", "sample_rate"}`` (the `master` request's keys, see
    PROTOCOL.md, plus ``mode`` and ``out_dir``).
``<id>.progress.json`` (replaced atomically while it runs)
    ``{"fraction": 0..1, "stage": str}``.
``<id>.reply.json`` (written once, atomically, at the end)
    ``{"state": "done", "file", "report", "summary": {lufs/true peak/LRA before and
    after}}`` or ``{"state": "error", "code", "message"}``; for ``analyze``,
    ``{"state": "done", "analysis": {...}}``.

The client cancels by creating ``<id>.cancel``: the job stops at the next stage and
answers ``cancelled``; nothing is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from protocol.errors import ErrorCode, exit_status


def _sibling(request: Path, suffix: str) -> Path:
    name = request.name[:-5] if request.name.endswith(".json") else request.name
    return request.with_name(name + suffix)


def loudness_figures(a: dict[str, Any]) -> dict[str, Any]:
    """``{"lufs", "true_peak", "lra"}`` of a master report's analysis (the integrated
    loudness, or the ungated one where gating leaves nothing: very short audio)."""
    lo = a["loudness"]
    return {"lufs": lo["integrated_lufs"] if lo["integrated_defined"] else lo["ungated_lufs"],
            "true_peak": a["peaks"]["true_peak_dbtp"], "lra": lo["lra_lu"]}


def _run(req: dict[str, Any], request: Path) -> dict[str, Any]:
    from engine.errors import CancelledError, InvalidArgumentError
    from engine.mastering.job import MasterOptions, master_file
    from protocol.files import write_json_atomic

    source = Path(str(req.get("source", "")))
    if not source.is_absolute():
        raise InvalidArgumentError("The request's source must be an absolute path.")
    if req.get("mode", "master") == "analyze":
        from engine import audio
        from engine.config import Limits
        from engine.mastering.analysis import analyze

        decoded, _ = audio.load(source, Limits())
        found = analyze(decoded.samples, decoded.samplerate, curves=False)
        return {"state": "done", "analysis": found, "summary": {"before": loudness_figures(found)}}
    cancel = _sibling(request, ".cancel")
    progress = _sibling(request, ".progress.json")

    def check() -> None:
        if cancel.exists():
            raise CancelledError("The master was cancelled.")

    def on_progress(frac: float, stage: str) -> None:
        write_json_atomic(progress, {"fraction": round(frac, 3), "stage": stage})

    reference = req.get("reference")
    options = MasterOptions(
        preset=str(req.get("preset") or ("reference" if reference else "streaming")),
        platform=req.get("platform"), reference=Path(reference) if reference else None,
        target_lufs=req.get("target_lufs"), true_peak_db=req.get("true_peak_db"),
        amount=float(req.get("amount", 1.0)), format=str(req.get("format", "wav")),
        bit_depth=str(req.get("bit_depth", "24")), sample_rate=req.get("sample_rate"),
        out_dir=Path(str(req.get("out_dir") or source.parent)))
    result = master_file(source, options, check=check, on_progress=on_progress)
    rep = result.report
    return {"state": "done", "file": str(result.output), "report": str(result.report_path),
            "intent": rep["intent"]["name"], "warnings": rep["warnings"],
            "summary": {"before": loudness_figures(rep["input_analysis"]),
                        "after": loudness_figures(rep["output_analysis"])}}


def run_request(request: Path) -> int:
    """Serve one request file; the exit status is the error's (0 when done)."""
    from engine.errors import StembridgeError
    from protocol.files import write_json_atomic

    reply = _sibling(request, ".reply.json")
    code: ErrorCode | None = None
    try:
        req = json.loads(request.read_text(encoding="utf-8"))
        if not isinstance(req, dict):
            raise ValueError("not a JSON object")
        answer = _run(req, request)
    except StembridgeError as err:
        code, answer = err.code, {"state": "error", "code": err.code.value, "message": str(err)}
    except (OSError, ValueError) as exc:
        code = ErrorCode.INVALID_ARGUMENT
        answer = {"state": "error", "code": code.value,
                  "message": f"Cannot read the request file {request}: {exc}"}
    write_json_atomic(reply, answer)
    _sibling(request, ".progress.json").unlink(missing_ok=True)
    return exit_status(code) if code is not None else 0
