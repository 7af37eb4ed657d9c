"""Which output stems a job produces from a model's sources.

``stems=None`` keeps the model's own sources. ``2`` gives vocals + instrumental (the sum
of every other source); ``4`` from a 6-source model folds guitar and piano into other,
``5`` (vocals, drums, bass, piano, other) folds guitar into other: the output stems
always sum to the model's sources.
Output order puts vocals first, as a DAW user expects them at the top.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import StembridgeError
from engine.models.catalog import DEFAULT_FOR_STEMS, stem_counts
from protocol.errors import ErrorCode
from protocol.stems import FIVE, FOUR, ORDER, TWO


@dataclass(frozen=True)
class StemPlan:
    """Output stem names and, for each, the indices of model sources summed into it."""

    names: tuple[str, ...]
    sources: tuple[tuple[int, ...], ...]

    def config_id(self) -> str:
        """A short string for the cache key, e.g. ``vocals=3|instrumental=0+1+2``."""
        return "|".join(f"{n}={'+'.join(map(str, s))}" for n, s in zip(self.names, self.sources, strict=True))


def _sorted(names: list[str]) -> list[str]:
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def plan_stems(model_name: str, model_sources: tuple[str, ...], stems: int | None,
               only: Sequence[str] | None = None, rest: str = "keep") -> StemPlan:
    """The `StemPlan` for `stems` (None, 2, 4, 5 or 6) from a model with `model_sources`;
    with `only`, just those of its stems (in track order), and with ``rest="keep"`` the
    others summed into ``other`` (of vocals + instrumental, the one left out stays as it
    is), so the stems still sum to the mix; ``rest="drop"`` leaves them out."""
    plan = _plan(model_name, model_sources, stems)
    if not only:
        return plan
    missing = [s for s in only if s not in plan.names]
    if missing:
        raise StembridgeError(
            f"{model_name} gives {', '.join(plan.names)}"
            f"{f' for {stems} stems' if stems else ''}, not {', '.join(missing)}: choose "
            "stems from those, or a model that separates them.",
            code=ErrorCode.STEMS_UNSUPPORTED)
    keep = [n for n in plan.names if n in only]
    left = [plan.sources[plan.names.index(n)] for n in plan.names if n not in only]
    groups = {n: plan.sources[plan.names.index(n)] for n in keep}
    if rest == "keep" and left:
        # the one stem left of vocals + instrumental keeps its name
        into = next(n for n in plan.names if n not in only) if plan.names == TWO else "other"
        pooled = tuple(i for g in left for i in g)
        groups[into] = groups.get(into, ()) + pooled
        if into not in keep:
            keep.append(into)
    names = _sorted(keep)
    return StemPlan(tuple(names), tuple(tuple(sorted(groups[n])) for n in names))


def _plan(model_name: str, model_sources: tuple[str, ...], stems: int | None) -> StemPlan:
    idx = {name: i for i, name in enumerate(model_sources)}
    n = len(model_sources)
    if stems is None or stems == n:
        if n == 2 and "vocals" in idx:
            other = next(s for s in model_sources if s != "vocals")
            return StemPlan(TWO, ((idx["vocals"],), (idx[other],)))
        names = _sorted(list(model_sources))
        return StemPlan(tuple(names), tuple((idx[s],) for s in names))
    if stems == 2 and "vocals" in idx:
        rest = tuple(i for s, i in idx.items() if s != "vocals")
        return StemPlan(TWO, ((idx["vocals"],), rest))
    subset = {4: FOUR, 5: FIVE}.get(stems or 0)
    if subset is not None and set(subset) <= set(idx):
        extra = tuple(i for s, i in idx.items() if s not in subset)
        return StemPlan(subset, tuple((idx[s],) + (extra if s == "other" else ())
                                      for s in subset))
    better = DEFAULT_FOR_STEMS.get(stems or 0)
    instead = f"; {better} can." if better else f"; a split gives {stem_counts()} stems."
    raise StembridgeError(
        f"{model_name} separates {n} sources ({', '.join(model_sources)}) and cannot give "
        f"{stems} stems{instead}",
        code=ErrorCode.STEMS_UNSUPPORTED,
    )
