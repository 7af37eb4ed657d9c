"""How this process's C allocator hands memory to torch's CPU tensors.

A window of htdemucs at the released size allocates and frees tensors of 4-70 MB
hundreds of times. With glibc's defaults (a dynamic mmap threshold, per-thread arenas
for OpenMP's workers, trimming on free) most of that memory goes back to the kernel when
it is freed and is mapped again, zero-filled, a 4 KiB page at a time, when the next
tensor needs it. Measured (issue 15; one fp32 window, 2 threads): about 390,000 minor
page faults (1.5 GB of pages) per window, and 3.0-3.3 s; with one arena, no mmap for
large blocks and no trimming, 0 faults after the first window and 2.35 s, peak RSS
1148 MB against 1126 MB. In bf16 the same window went from 2.0 s to 1.5 s.

`configure` keeps freed memory for reuse (one arena, no mmap for large blocks, no
trimming on free); `release` hands the free part back to the system (after a job, so a
warm server does not hold a job's peak while idle). Linux with glibc only; elsewhere, or
when the user chose allocator settings (``GLIBC_TUNABLES``, ``MALLOC_*``, a preloaded
jemalloc/tcmalloc, or ``STEMBRIDGE_ALLOCATOR=system``), nothing changes.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys
import threading
from collections.abc import Mapping

#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
#: free memory at the top of the heap kept before free() trims it (1 GiB: a window's
#: working set stays mapped between windows; `release` trims after a job)
TRIM_THRESHOLD = 1 << 30

#: the same settings for a process that does not call `configure` (read by glibc at
#: start), e.g. a reference script in a benchmark
TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
            f"glibc.malloc.trim_threshold={TRIM_THRESHOLD}")

_lock = threading.Lock()
_state: dict[str, object] = {}


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, or None elsewhere (``platform.libc_ver`` scans the interpreter's file:
    once per process)."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def user_choice(environ: Mapping[str, str] | None = None) -> str | None:
    """Why the allocator is left as it is, or None when `configure` may tune it."""
    env = os.environ if environ is None else environ
    if env.get("STEMBRIDGE_ALLOCATOR", "").lower() in ("system", "default", "off"):
        return "STEMBRIDGE_ALLOCATOR asks for the system's allocator settings"
    if "malloc" in env.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES sets malloc tunables"
    chosen = sorted(k for k in env if k.startswith("MALLOC_") and k.endswith("_"))
    if chosen or "MALLOC_ARENA_MAX" in env:
        return f"{', '.join(chosen or ['MALLOC_ARENA_MAX'])} set"
    preload = env.get("LD_PRELOAD", "")
    if any(lib in preload for lib in ("jemalloc", "tcmalloc", "mimalloc")):
        return "another allocator is preloaded"
    return None


def configure() -> bool:
    """Keep freed memory in one heap for reuse (see the module doc). Call it early, before
    torch's threads first allocate (a thread keeps the arena it started with). Returns
    whether the settings are in force; idempotent and thread-safe."""
    with _lock:
        if "configured" in _state:
            return bool(_state["configured"])
        libc = None if user_choice() else _libc()
        done = False
        if libc is not None:
            done = all(libc.mallopt(param, value) == 1 for param, value in (
                (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD)))
        _state["configured"] = done
        return done


def release() -> bool:
    """Return the heap's free memory to the system (``malloc_trim``); after a job. Returns
    whether anything was released; False where `configure` is not in force."""
    if not _state.get("configured"):
        return False
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))
