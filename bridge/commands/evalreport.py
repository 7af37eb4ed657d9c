"""What `stembridge eval` writes and compares: the JSON (every figure), the Markdown
tables, the SDR plot, and the check against a baseline.

Figures are dB. In the JSON a figure that is not a number (nothing scored: every frame had
a silent source) is ``null`` and a perfect one (+inf) is the string ``"inf"``, so the
file is standard JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The figures in table order (museval's names).
METRICS = ("SDR", "SIR", "SAR", "ISR")
#: Largest baseline file read, bytes (a full MUSDB18 run with its frames is a few MB).
MAX_BASELINE_BYTES = 256 * 2**20


def to_json(value: Any) -> Any:
    """`value` with every float rounded to 4 decimals, nan -> None, ±inf -> "inf"/"-inf"."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return round(value, 4)
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def from_json(value: Any) -> float:
    """A figure of the JSON back as a float (None -> nan, "inf" -> inf). Raises
    ValueError for anything else."""
    if value is None:
        return math.nan
    if value in ("inf", "-inf"):
        return float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"{value!r} is not a figure (a number, null, \"inf\" or \"-inf\")")


def _cell(value: float) -> str:
    if math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.2f}"


def _stems(result: dict[str, Any]) -> list[str]:
    """Every scored stem, in the order the models give them."""
    out: list[str] = []
    for per in result["aggregate"].values():
        out += [s for s in per if s not in out]
    return out


def markdown(result: dict[str, Any]) -> str:
    """The aggregate SDR side by side, each model's four figures, and SDR per track."""
    models = list(result["aggregate"])
    stems = _stems(result)
    agg = result["aggregate"]
    n_tracks = len(result["tracks"])
    lines = [f"# Separation quality: {', '.join(models)}", "",
             f"{result['standard']}. {n_tracks} track{'s' * (n_tracks != 1)}; dB, higher "
             "is better; – where nothing was scored.", "",
             "## SDR, median over tracks", "",
             "| stem | " + " | ".join(models) + " |",
             "|---|" + "---:|" * len(models)]
    for stem in stems:
        cells = [_cell(agg[m][stem]["SDR"]) if stem in agg[m] else "" for m in models]
        lines.append(f"| {stem} | " + " | ".join(cells) + " |")
    for model in models:
        lines += ["", f"## {model} (version {result['models'][model]['version']})", "",
                  "| stem | " + " | ".join(METRICS) + " | tracks |",
                  "|---|" + "---:|" * (len(METRICS) + 1)]
        for stem, fig in agg[model].items():
            lines.append(f"| {stem} | " + " | ".join(_cell(fig[m]) for m in METRICS)
                         + f" | {fig['tracks']} |")
    lines += ["", "## SDR per track (median over frames)", "",
              "| track | model | " + " | ".join(stems) + " |",
              "|---|---|" + "---:|" * len(stems)]
    for entry in result["tracks"]:
        for model in models:
            got = entry["results"][model]["stems"]
            cells = [_cell(got[s]["SDR"]) if s in got else "" for s in stems]
            lines.append(f"| {entry['name']} | {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], out: Path) -> Path:
    """Per stem, the distribution over tracks of each model's SDR (box and points) into
    the PNG `out`, written atomically. Needs matplotlib (ImportError otherwise)."""
    from bridge.commands.report import pyplot, save_png

    plt = pyplot()

    models = list(result["aggregate"])
    stems = _stems(result)
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(stems) * max(1, len(models)) ** 0.5), 4))
    for k, model in enumerate(models):
        pos, data = [], []
        for i, stem in enumerate(stems):
            values = [v for v in (e["results"][model]["stems"].get(stem, {}).get("SDR", math.nan)
                                  for e in result["tracks"]) if math.isfinite(v)]
            if values:
                pos.append(i + (k - (len(models) - 1) / 2) * width)
                data.append(values)
        color = f"C{k}"
        if data:
            ax.boxplot(data, positions=pos, widths=width * 0.8, patch_artist=True,
                       boxprops={"facecolor": color, "alpha": 0.35}, medianprops={"color": color},
                       showfliers=False, manage_ticks=False)
            for p, values in zip(pos, data, strict=True):
                ax.plot([p] * len(values), values, "o", color=color, ms=3)
        ax.plot([], [], "s", color=color, label=model)
    ax.set_xticks(range(len(stems)), stems)
    ax.set(ylabel="SDR (dB), per track", title="SDR per stem and model (BSS Eval v4)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, out)


@dataclass(frozen=True)
class Change:
    """One (model, stem) figure against its baseline, in dB."""

    model: str
    stem: str
    metric: str
    baseline: float
    current: float

    @property
    def delta(self) -> float:
        return self.current - self.baseline


def read_baseline(path: Path) -> dict[str, Any]:
    """The aggregate of a previous run's JSON at `path` (size-bounded). Raises ValueError
    saying what is wrong with it."""
    with open(path, "rb") as fh:
        data = fh.read(MAX_BASELINE_BYTES + 1)
    if len(data) > MAX_BASELINE_BYTES:
        raise ValueError(f"it is larger than {MAX_BASELINE_BYTES // 2**20} MB")
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"it is not JSON ({exc})") from None
    agg = doc.get("aggregate") if isinstance(doc, dict) else None
    if not isinstance(agg, dict) or not all(isinstance(v, dict) for v in agg.values()):
        raise ValueError("it has no \"aggregate\" table; give the eval.json of a "
                         "previous `stembridge eval` run")
    out: dict[str, dict[str, dict[str, float]]] = {}
    for model, stems in agg.items():
        for stem, figures in stems.items():
            if not isinstance(figures, dict):
                raise ValueError(f"its figures of {model} {stem} are not a table")
            try:
                out.setdefault(model, {})[stem] = {
                    m: from_json(figures[m]) for m in METRICS if m in figures}
            except ValueError as exc:
                raise ValueError(f"{model} {stem}: {exc}") from None
    return out


def compare(result: dict[str, Any], baseline: dict[str, Any], metric: str = "SDR"
            ) -> list[Change]:
    """`metric` of every (model, stem) the run and the baseline (`read_baseline`'s
    floats) both have."""
    out = []
    for model, stems in result["aggregate"].items():
        for stem, fig in stems.items():
            old = baseline.get(model, {}).get(stem)
            if isinstance(old, dict) and metric in old:
                out.append(Change(model, stem, metric, old[metric], fig[metric]))
    return out


def regressions(changes: list[Change], tolerance: float) -> list[Change]:
    """The changes that lost more than `tolerance` dB (a figure that became nan while
    the baseline had a number counts as lost)."""
    lost = []
    for c in changes:
        if math.isnan(c.baseline):
            continue
        if math.isnan(c.current) or c.delta < -tolerance:
            lost.append(c)
    return lost


def describe(change: Change) -> str:
    return (f"{change.model} {change.stem}: {change.metric} {_cell(change.baseline)} -> "
            f"{_cell(change.current)} dB ({change.delta:+.2f} dB)")
