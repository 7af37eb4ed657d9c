"""The simulated REAPER's gfx window: one per script (Lua state), as in REAPER.

REAPER's gfx API (api.txt, sections gfx and gfx_variables): `gfx.init` opens the script's
window (and sets `gfx.w`, `gfx.h`); drawing (`drawstr`, `rect`, `line`, ...) happens at
`gfx.x`/`gfx.y` in the colour of `gfx.r/g/b/a`; `gfx.update` shows what was drawn;
`gfx.getchar` returns the next key (0 when none), -1 once the window is closed (by the user
or `gfx.quit`); `gfx.showmenu` records its menu and returns the test's next pick; `gfx.mouse_x/mouse_y/mouse_cap` (1 = left button) tell the mouse. The
variables live in the script's `gfx` table, as in REAPER.

The model, for tests: text is `texth // 2` pixels per character (at least 4) and `texth`
high (8 until `setfont` gives a size); the canvas is the list of what was drawn since the last clear: `gfx.clear` >= 0 clears it when
`update` shows a frame, and a filled rectangle over the whole window paints over it. Mouse
input from a test (`click`, `move`) is queued; each `getchar` (or `update`) call takes the
next mouse state, so a click is a press seen by one frame and the release by the next.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Drawn:
    """One drawing operation: kind ("str", "rect", "line", ...), position, size, text."""

    kind: str
    x: float
    y: float
    w: float = 0.0
    h: float = 0.0
    text: str = ""
    filled: bool = False


@dataclass
class GfxWindow:
    """The gfx state of one script's Lua state (`table`: its `gfx` table)."""

    script: str
    table: Any = None
    is_open: bool = False
    title: str = ""
    canvas: list[Drawn] = field(default_factory=list)   # what the window shows now
    pending: list[Drawn] = field(default_factory=list)  # drawn since the last update
    frames: int = 0                                     # gfx.update calls while open
    opened: int = 0                                     # gfx.init calls that opened it
    drawn: int = 0                                      # drawing operations, in all
    keys: deque[int] = field(default_factory=deque)
    mouse: deque[tuple[float, float, int]] = field(default_factory=deque)
    painted_over: bool = False                          # a full-window fill since update
    menus: list[str] = field(default_factory=list)      # each gfx.showmenu's menu string
    menu_answers: deque[int] = field(default_factory=deque)  # what the user picks (0: none)

    # ------------------------------------------------------------------ tests' controls

    def bind(self, table: Any) -> None:
        """Attach to a Lua state's `gfx` table: REAPER's initial variable values."""
        self.table = table
        for name, value in (("r", 1.0), ("g", 1.0), ("b", 1.0), ("a", 1.0), ("a2", 1.0),
                            ("mode", 0), ("w", 0), ("h", 0), ("x", 0), ("y", 0),
                            ("clear", 0), ("dest", -1), ("texth", 8), ("ext_retina", 0),
                            ("mouse_x", 0), ("mouse_y", 0), ("mouse_wheel", 0),
                            ("mouse_hwheel", 0), ("mouse_cap", 0)):
            table[name] = value

    def click(self, x: float, y: float) -> None:
        """The user clicks at (x, y) in the window: a press, then a release."""
        self.mouse.append((x, y, 1))
        self.mouse.append((x, y, 0))

    def close(self) -> None:
        """The user closes the window (its close box): getchar returns -1 from now on."""
        self.is_open = False

    def strings(self) -> list[str]:
        """The texts the window shows (at its last update), top to bottom."""
        return [d.text for d in sorted((d for d in self.canvas if d.kind == "str"),
                                       key=lambda d: (d.y, d.x))]

    def find(self, text: str) -> list[Drawn]:
        """The shown strings that contain `text`."""
        return [d for d in self.canvas if d.kind == "str" and text in d.text]

    # ------------------------------------------------------------------ helpers

    def _get(self, name: str) -> float:
        value = self.table[name]
        return float(value) if value is not None else 0.0

    def _char_w(self) -> int:
        return max(4, int(self._get("texth")) // 2)

    def _measure(self, text: str) -> tuple[int, int]:
        return len(text) * self._char_w(), int(self._get("texth"))

    def _draw(self, d: Drawn) -> None:
        if not self.is_open:
            return
        self.drawn += 1
        if (d.kind == "rect" and d.filled and d.x <= 0 and d.y <= 0
                and d.x + d.w >= self._get("w") and d.y + d.h >= self._get("h")):
            self.pending = []  # painted over everything drawn before
            self.painted_over = True
        self.pending.append(d)

    def _next_mouse(self) -> None:
        if self.mouse:
            x, y, cap = self.mouse.popleft()
            self.table["mouse_x"], self.table["mouse_y"] = int(x), int(y)
            self.table["mouse_cap"] = cap

    # ------------------------------------------------------------------ gfx functions

    def _init(self, name: str, width: float | None = None, height: float | None = None,
              dockstate: float | None = None, xpos: float | None = None,
              ypos: float | None = None) -> int:
        if not self.is_open:
            if name == "":  # "" only changes an open window
                return 0
            self.is_open, self.canvas, self.pending = True, [], []
            self.opened += 1
        if name:
            self.title = name
        self.table["w"] = int(width) if width else (int(self._get("w")) or 400)
        self.table["h"] = int(height) if height else (int(self._get("h")) or 300)
        return 1

    def _quit(self) -> int:
        self.is_open = False
        return 0

    def _update(self) -> int:
        if self.is_open:
            self._next_mouse()
            reset = self.painted_over or self._get("clear") >= 0
            self.canvas = self.pending if reset else self.canvas + self.pending
            self.pending, self.painted_over = [], False
            self.frames += 1
        return 0

    def _getchar(self, character: float | None = None, unicode_char: float | None = None
                 ) -> int:
        if not self.is_open:
            return -1
        self._next_mouse()
        return self.keys.popleft() if self.keys else 0

    def _dock(self, v: float, wx: float | None = None, wy: float | None = None,
              ww: float | None = None, wh: float | None = None) -> tuple[Any, ...]:
        return 0, 0, 0, int(self._get("w")), int(self._get("h"))

    def _setfont(self, idx: float, fontface: str | None = None, sz: float | None = None,
                 flags: float | None = None) -> int:
        if sz:
            self.table["texth"] = int(sz)
        return 0

    def _set(self, r: float, g: float | None = None, b: float | None = None,
             a2: float | None = None, mode: float | None = None,
             dest: float | None = None) -> int:
        self.table["r"] = r
        self.table["g"] = r if g is None else g
        self.table["b"] = r if b is None else b
        if a2 is not None:
            self.table["a"] = a2
        if mode is not None:
            self.table["mode"] = mode
        return 0

    def _measurestr(self, text: str) -> tuple[int, int]:
        return self._measure(text)

    def _drawstr(self, text: str, flags: float | None = None, right: float | None = None,
                 bottom: float | None = None) -> int:
        w, h = self._measure(text)
        x, y = self._get("x"), self._get("y")
        self._draw(Drawn("str", x, y, w, h, text))
        self.table["x"] = x + w
        return 0

    def _rect(self, x: float, y: float, w: float, h: float, filled: float | None = None
              ) -> int:
        self._draw(Drawn("rect", x, y, w, h, filled=filled is None or bool(filled)))
        return 0

    def _roundrect(self, x: float, y: float, w: float, h: float, radius: float,
                   antialias: float | None = None) -> int:
        self._draw(Drawn("roundrect", x, y, w, h))
        return 0

    def _line(self, x: float, y: float, x2: float, y2: float, aa: float | None = None
              ) -> int:
        self._draw(Drawn("line", x, y, x2 - x, y2 - y))
        return 0

    def _showmenu(self, menu_string: str) -> int:
        """The popup menu at gfx.x/gfx.y: its fields are separated by ``|``; the user's
        pick is the next of `menu_answers` (1 = the first field; 0, also when none is
        queued, = the menu dismissed). Only menus without separators or submenus are
        modelled (REAPER does not count those fields)."""
        fields = menu_string.split("|")
        if any(f == "" or f.startswith((">", "<")) for f in fields):
            raise ValueError("the simulated gfx.showmenu models plain menus only: "
                             f"{menu_string!r}")
        self.menus.append(menu_string)
        pick = self.menu_answers.popleft() if self.menu_answers else 0
        return pick if 0 <= pick <= len(fields) else 0

    def functions(self) -> dict[str, Any]:
        """gfx function name (without "gfx.") -> its simulation, for the ones modelled."""
        return {name[1:]: getattr(self, name) for name in dir(type(self))
                if name.startswith("_") and not name.startswith("__")
                and callable(getattr(self, name)) and name[1:] in _MODELLED}


_MODELLED = {"init", "quit", "update", "getchar", "dock", "setfont", "set", "measurestr",
             "drawstr", "rect", "roundrect", "line", "showmenu"}
