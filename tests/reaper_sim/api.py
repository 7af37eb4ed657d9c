"""REAPER's ReaScript API as data, parsed from ../shared/reaper/api.txt.

Each line is ``name<TAB>Lua signature``; ``# section: X`` lines group them. The simulation
offers exactly the functions of the sections REAPER's Lua has (native, lua_builtin,
newer_native, gfx), with these parameter lists: a script calling a function REAPER lacks
gets nil, as in REAPER."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

#: The workplace's copy (../shared/reaper/api.txt beside the checkout) when there is one;
#: otherwise the copy in this folder (the same file, kept equal by a test), so that a
#: checkout on its own runs the tests.
SHARED_API_TXT = Path(__file__).resolve().parents[3] / "shared" / "reaper" / "api.txt"
VENDORED_API_TXT = Path(__file__).resolve().parent / "reaper_api.txt"
API_TXT = SHARED_API_TXT if SHARED_API_TXT.is_file() else VENDORED_API_TXT
SECTIONS = ("native", "lua_builtin", "newer_native", "gfx")


@dataclass(frozen=True)
class Param:
    type: str
    name: str
    optional: bool


@dataclass(frozen=True)
class Signature:
    name: str
    section: str
    params: tuple[Param, ...]
    returns: tuple[str, ...]
    text: str

    @property
    def required(self) -> int:
        return sum(not p.optional for p in self.params)


_CALL = re.compile(r"^(?P<ret>.*?)(?:\s*=\s*)?\s*(?:reaper|gfx)\.(?P<name>\w+)\((?P<args>.*)\)\s*$")


def _parse_params(text: str) -> tuple[Param, ...]:
    params = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        words = part.split()
        optional = words[0] == "optional"
        if optional:
            words = words[1:]
        if len(words) == 1:  # e.g. "..." or an untyped name
            params.append(Param("any", words[0], optional))
        else:
            params.append(Param(words[0], words[-1], optional))
    return tuple(params)


def _parse_returns(text: str) -> tuple[str, ...]:
    text = text.strip()
    if not text:
        return ()
    return tuple(p.split()[0] for p in text.split(",") if p.strip())


@lru_cache(maxsize=1)
def load(path: Path = API_TXT) -> dict[str, Signature]:
    """name -> Signature for every function a REAPER 7 Lua script can call."""
    section = ""
    out: dict[str, Signature] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# section:"):
            section = line.split(":", 1)[1].split()[0]
            continue
        if not line.strip() or line.startswith("#") or section not in SECTIONS:
            continue
        name, _tab, sig = line.partition("\t")
        m = _CALL.match(sig.strip())
        if m is None:
            raise ValueError(f"cannot parse api.txt line: {line!r}")
        out[name] = Signature(name, section, _parse_params(m.group("args")),
                              _parse_returns(m.group("ret")), sig.strip())
    return out
