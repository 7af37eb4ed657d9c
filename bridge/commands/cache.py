"""`stembridge cache info | prune`: how much the results cache holds, and shrinking it
to its size budget (``STEMBRIDGE_CACHE_MAX_MB``) or to ``--max-mb``, least recently used
entries first (`engine.cache.ResultCache`)."""

from __future__ import annotations

import argparse
import json

from protocol import settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``cache`` command and its two subcommands."""
    c = sub.add_parser("cache", help="results cache: size, and pruning it to its budget")
    csub = c.add_subparsers(dest="cache_command")
    ci = csub.add_parser("info", help="where the cache is, its entries, size and budget")
    ci.add_argument("--json", action="store_true")
    cp = csub.add_parser("prune", help="remove least recently used entries until the "
                         "cache fits its budget")
    cp.add_argument("--max-mb", type=float, default=None, metavar="MB",
                    help="the size to prune to (default STEMBRIDGE_CACHE_MAX_MB; 0 empties "
                    "the cache)")
    for p in (ci, cp):
        p.add_argument("--cache-dir", default=None, help="the results cache folder")


def cmd_cache(args: argparse.Namespace) -> int:
    """Run ``cache info`` or ``cache prune``; returns the exit status."""
    from pathlib import Path

    from engine.cache import ResultCache
    from engine.config import results_cache_dir

    root = Path(args.cache_dir) if args.cache_dir else results_cache_dir()
    budget = settings.cache_max_bytes()
    cache = ResultCache(root, budget)
    if args.cache_command == "prune":
        limit = budget if args.max_mb is None else int(args.max_mb * 2**20)
        removed = cache.prune(limit)
        freed = sum(e.bytes for e in removed)
        print(f"removed {len(removed)} entries ({freed / 2**20:.1f} MiB) from {root}")
        return 0
    if args.cache_command != "info":
        print("stembridge cache: choose `info` or `prune`")
        return 2
    entries = cache.usage()
    total = sum(e.bytes for e in entries)
    info = {"folder": str(root), "entries": len(entries), "bytes": total,
            "budget_bytes": budget}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"results cache: {root}\n{len(entries)} entries, {total / 2**20:.1f} MiB of a "
              f"budget of {budget / 2**20:.0f} MiB (STEMBRIDGE_CACHE_MAX_MB; 0: unbounded)")
    return 0
