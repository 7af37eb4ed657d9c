"""Running Ardour's real GUI under a virtual X server (Xvfb) for the Ardour client tests.

Ardour starts straight into a session when its user folder says it has run before
(`.a7`), its configuration names an audio engine that starts by itself (the Dummy
backend, shown once `hide-dummy-backend` is off), and Lua action hooks are registered in
`ui_scripts`, the file where Ardour keeps them (`UIScripts/ActionHooks/LuaCallback`, the
state of Ardour's own Lua script manager: a Lua chunk, base64). Nothing is clicked.
"""

from __future__ import annotations

import base64
import glob
import os
import shutil
import subprocess
import time
from pathlib import Path

#: Ardour 7's LuaSignal bitset with only LuaTimerDS (the 100 ms timer) set, as Ardour
#: 7.3 writes it when a timer hook is added in its Script Manager.
TIMER_DS_7 = "0100000000000000000000000000000000000000000000000"

CONFIG = """<?xml version="1.0" encoding="UTF-8"?>
<Ardour>
  <Config>
    <Option name="hide-dummy-backend" value="0"/>
  </Config>
  <Extra>
    <AudioMIDISetup>
      <EngineStates>
        <State backend="None (Dummy)" driver="Normal Speed" device="Silence" input-device=""
          output-device="" sample-rate="{rate}" buffer-size="1024" n-periods="0"
          input-latency="0" output-latency="0" lm-input="" lm-output="" active="1"
          use-buffered-io="0" midi-option="1 in, 1 out, Silence" lru="1">
          <MIDIDevices/>
        </State>
      </EngineStates>
    </AudioMIDISetup>
  </Extra>
</Ardour>
"""


def ardour_gui() -> tuple[str, str] | None:
    """(the Ardour 7 GUI command, Xvfb) when both are installed."""
    xvfb = shutil.which("Xvfb")
    gui = shutil.which("ardour7") or shutil.which("ardour")
    if not (xvfb and gui and glob.glob("/usr/lib/ardour7/ardour-*")):
        return None
    return gui, xvfb


def lua_string(text: str) -> str:
    """`text` as a double-quoted Lua string literal."""
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 32:
            out.append(f"\\{ord(ch):03d}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _callback(n: int, name: str, script: str) -> str:
    """One saved action hook: Ardour's script manager state for `script`'s factory."""
    factory = "local function ardour () end\n" + script + "\nreturn factory (...)\n"
    state = (f"s = {{}} s[\"n\"] = {lua_string(name)} s[\"s\"] = {lua_string(script)} "
             f"s[\"f\"] = {lua_string(factory)} s[\"a\"] = {{}} ")
    b64 = base64.b64encode(state.encode()).decode()
    return (f'<LuaCallback lua="Lua 5.3" id="{9000 + n}" name="{name}" '
            f'signals="{TIMER_DS_7}">{b64}</LuaCallback>')


def prepare_home(home: Path, hooks: list[tuple[str, Path]], rate: int) -> Path:
    """Ardour's user folder in `home` (first run done, Dummy engine, `hooks` registered).
    Returns the folder (`<home>/.config/ardour7`)."""
    conf = home / ".config" / "ardour7"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / ".a7").touch()
    (conf / "config").write_text(CONFIG.format(rate=rate))
    callbacks = "\n".join(_callback(i, name, path.read_text()) for i, (name, path)
                          in enumerate(hooks))
    (conf / "ui_scripts").write_text('<?xml version="1.0" encoding="UTF-8"?>\n<UIScripts>\n'
                                     f"<ActionHooks>\n{callbacks}\n</ActionHooks>\n"
                                     "</UIScripts>\n")
    return conf


def run(gui: str, xvfb: str, session: Path, env: dict[str, str], result: Path,
        timeout: float, log: Path) -> int | None:
    """Start Xvfb and Ardour on `session`; wait for `result` to appear, then stop both.
    Returns Ardour's exit status when it ended by itself (negative: killed by a signal),
    None when it was still running."""
    display = next(n for n in range(100 + os.getpid() % 500, 1000)
                   if not Path(f"/tmp/.X{n}-lock").exists()
                   and not Path(f"/tmp/.X11-unix/X{n}").exists())
    server = subprocess.Popen([xvfb, f":{display}", "-screen", "0", "1280x800x24",
                               "-nolisten", "tcp"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    socket = Path(f"/tmp/.X11-unix/X{display}")
    deadline = time.monotonic() + 20
    while not socket.exists() and server.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    env = dict(env, DISPLAY=f":{display}")
    with open(log, "wb") as out:
        out.write(f"Xvfb display :{display} ({'up' if socket.exists() else 'missing'})\n"
                  .encode())
        out.flush()
        proc = subprocess.Popen([gui, "--no-splash", str(session)], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while not result.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.0)  # the session file is saved before the result is written
            status = proc.poll()
            out.write(f"\nardour exit status: {status}\n".encode())
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            server.terminate()
            server.wait(10)
    return status
