"""engine.allocator: freed tensor memory is reused without page faults, and handed back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import allocator

ROOT = Path(__file__).resolve().parents[2]
glibc_only = pytest.mark.skipif(allocator._libc() is None, reason="needs Linux with glibc")

#: runs a DConv-like block (tensors of 4-66 MB, as in an htdemucs window) 4 times;
#: prints the minor page faults of each round, and RSS before and after `release`
PROBE = r"""
import json, resource
from engine import allocator
configured = allocator.configure()
import torch
import torch.nn.functional as F
x = torch.randn(512, 48, 336)
w1, w2 = torch.randn(6, 48, 3), torch.randn(96, 6, 1)
def block(x):
    z = F.conv1d(F.gelu(F.conv1d(x, w1, padding=1)), w2)
    return x + F.glu(F.group_norm(z, 1), 1)
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
faults = []
with torch.inference_mode():
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block(block(x))
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
held = rss()
released = allocator.release()
print(json.dumps({"configured": configured, "faults": faults, "held": held,
                  "after": rss(), "released": released}))
"""


def _probe(**env: str) -> dict:
    run_env = {k: v for k, v in os.environ.items()
               if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES",
                                                            "STEMBRIDGE_ALLOCATOR")}
    run_env.update(env, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", PROBE], env=run_env, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc_only
def test_freed_tensors_are_reused_without_page_faults_and_released_after() -> None:
    tuned = _probe()
    assert tuned["configured"] is True
    # the first round maps its working set; later rounds reuse it (pages of 4 KiB)
    assert tuned["faults"][0] > 10_000 and max(tuned["faults"][1:]) < 1_000, tuned
    assert tuned["released"] is True
    assert tuned["held"] - tuned["after"] > 64 << 20, tuned  # the freed blocks went back

    system = _probe(STEMBRIDGE_ALLOCATOR="system")
    assert system["configured"] is False and system["released"] is False
    # glibc's default maps and unmaps the large blocks each time: they fault every round
    assert min(system["faults"][1:]) > 50_000, system


def test_user_settings_are_left_alone() -> None:
    assert allocator.user_choice({}) is None
    assert allocator.user_choice({"PATH": "/bin"}) is None
    for env in ({"STEMBRIDGE_ALLOCATOR": "system"}, {"MALLOC_ARENA_MAX": "4"},
                {"MALLOC_MMAP_THRESHOLD_": "65536"},
                {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
                {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}):
        assert allocator.user_choice(env), env
    assert allocator.user_choice({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"}) is None
