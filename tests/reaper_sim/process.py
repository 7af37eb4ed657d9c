"""The simulated REAPER's script plumbing: defer/atexit queues, action options and
context, the OS and file helpers, and ExecProcess (no shell, or /bin/sh with
`exec_shell`). A mixin of `sim.ReaperSim`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def split_command_line(cmd: str) -> list[str]:
    """REAPER's ExecProcess splits its command line itself (no shell): arguments are
    separated by spaces; double quotes group; there are no other escapes."""
    out: list[str] = []
    cur: list[str] = []
    quoted = started = False
    for ch in cmd:
        if ch == '"':
            quoted, started = not quoted, True
        elif ch == " " and not quoted:
            if started:
                out.append("".join(cur))
            cur, started = [], False
        else:
            cur.append(ch)
            started = True
    if started:
        out.append("".join(cur))
    return out



class ProcessMixin:
    """defer, atexit, set_action_options, get_action_context, ExecProcess and friends."""

    deferred: list[tuple[str, Any]]
    atexit: list[tuple[str, Any]]
    processes: list[tuple[list[str], Any]]
    _current: str
    _options: dict[str, int]
    action_options: int
    script_path: str
    resource_path: str
    os_name: str
    exec_shell: bool

    def _defer(self, func: Any) -> bool:
        self.deferred.append((self._current, func))
        return True

    def _atexit(self, func: Any) -> bool:
        self.atexit.append((self._current, func))
        return True

    def _set_action_options(self, flag: int) -> None:
        self.action_options = int(flag)
        self._options[self._current] = int(flag)

    def _get_action_context(self) -> tuple[Any, ...]:
        return False, self.script_path, 0, 55000, -1, -1, -1.0, ""

    def _time_precise(self) -> float:
        return time.perf_counter()

    def _GetOS(self) -> str:
        return self.os_name

    def _GetAppVersion(self) -> str:
        return "7.27/linux-x86_64"

    def _GetResourcePath(self) -> str:
        return self.resource_path

    def _RecursiveCreateDirectory(self, path: str, ignored: int) -> int:
        Path(path).mkdir(parents=True, exist_ok=True)
        return 1

    def _EnumerateFiles(self, path: str, fileindex: int) -> str | None:
        """The `fileindex`-th file (not folder) of `path`, in name order; nil past the end."""
        try:
            names = sorted(p.name for p in Path(path).iterdir() if p.is_file())
        except OSError:
            return None
        i = int(fileindex)
        return names[i] if 0 <= i < len(names) else None

    def _file_exists(self, path: str) -> bool:
        return Path(path).is_file()

    def _genGuid(self, guid: str) -> str:
        import uuid

        return "{" + str(uuid.uuid4()).upper() + "}"

    def _ExecProcess(self, cmdline: str, timeoutmsec: int) -> str | None:
        """REAPER runs the command line without a shell (`exec_shell`: through /bin/sh
        -c, as it may on Linux and macOS); -1/-2 do not wait."""
        import subprocess

        argv = ["/bin/sh", "-c", cmdline] if self.exec_shell else split_command_line(cmdline)
        if not argv:
            return None
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
        except OSError:
            return None
        self.processes.append((argv, proc))
        if int(timeoutmsec) < 0:
            return ""
        try:
            out, _ = proc.communicate(timeout=None if int(timeoutmsec) == 0
                                      else int(timeoutmsec) / 1000)
        except subprocess.TimeoutExpired:
            proc.kill()
            return None
        return f"{proc.returncode}\n{out.decode(errors='replace')}"

