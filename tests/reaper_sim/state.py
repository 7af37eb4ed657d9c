"""The simulated REAPER's user-facing and stored state: the console, message boxes,
GetUserInputs, ExtState (REAPER-wide, optionally persisted) and ProjExtState (per project;
keys are case-insensitive; an empty value removes a key). A mixin of `sim.ReaperSim`."""

from __future__ import annotations

from typing import Any

from tests.reaper_sim.model import Project


class StateMixin:
    """Console, MB, GetUserInputs, Get/Set/Has/DeleteExtState, *ProjExtState."""

    console: list[str]
    messages: list[tuple[str, str, int]]
    mb_answer: int
    user_inputs: str | None
    inputs_asked: list[tuple[str, int, str, str]]
    ext_state: dict[tuple[str, str], str]
    ext_persist: set[tuple[str, str]]

    # Provided by ProjectsMixin, first in ReaperSim's bases (declared for readers).
    def _proj(self, proj: Any) -> Project:
        raise NotImplementedError

    def _ShowConsoleMsg(self, msg: str) -> None:
        self.console.append(msg)

    def _MB(self, msg: str, title: str, kind: int) -> int:
        self.messages.append((msg, title, int(kind)))
        return self.mb_answer

    def _GetUserInputs(self, title: str, num: int, captions: str, values: str
                       ) -> tuple[bool, str]:
        self.inputs_asked.append((title, int(num), captions, values))
        if self.user_inputs is None:
            return False, values
        return True, self.user_inputs

    def _GetExtState(self, section: str, key: str) -> str:
        return self.ext_state.get((section, key), "")

    def _SetExtState(self, section: str, key: str, value: str, persist: bool) -> None:
        self.ext_state[(section, key)] = value
        if persist:
            self.ext_persist.add((section, key))

    def _HasExtState(self, section: str, key: str) -> bool:
        return (section, key) in self.ext_state

    def _DeleteExtState(self, section: str, key: str, persist: bool) -> None:
        self.ext_state.pop((section, key), None)
        self.ext_persist.discard((section, key))

    def _GetProjExtState(self, proj: Any, extname: str, key: str) -> tuple[int, str]:
        val = self._proj(proj).ext.get(extname.upper(), {}).get(key.upper(), "")
        return (1 if val else 0), val

    def _SetProjExtState(self, proj: Any, extname: str, key: str, value: str) -> int:
        section = self._proj(proj).ext.setdefault(extname.upper(), {})
        if not key:
            section.clear()
        elif value:
            section[key.upper()] = value
        else:  # an empty value removes the key
            section.pop(key.upper(), None)
        return 1

    def _EnumProjExtState(self, proj: Any, extname: str, idx: int
                          ) -> tuple[bool, str | None, str | None]:
        items = list(self._proj(proj).ext.get(extname.upper(), {}).items())
        if 0 <= int(idx) < len(items):
            return True, items[int(idx)][0], items[int(idx)][1]
        return False, None, None

