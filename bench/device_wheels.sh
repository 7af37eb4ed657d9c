#!/usr/bin/env bash
# The Python packages bench/device_check.sh needs that the lent GPU machine lacks, as
# wheels in .whl/ (issue 16). Run HERE (a machine with the package registry), from the
# root of the checkout the device call sends (the one the session started in, not a
# helper's worktree), before the device call:
#
#     bash bench/device_wheels.sh            # fills .whl/, prints the wheels and sizes
#
# then the device tool's `run` with carry [".whl"], command "bash bench/device_check.sh"
# and timeout_s about 560; device_check.sh installs the wheels there with
# `pip install --no-index --no-deps --target /tmp/site` (the machine is offline) and puts
# /tmp/site on PYTHONPATH.
#
# The machine's python3 (Python 3.12, torch 2.11 CUDA, numpy, scipy, pyyaml, einops, tqdm,
# safetensors, msgpack, onnx, onnxruntime, huggingface_hub, pytest, pytest-xdist: the
# device README's KINDS.md list) already has the rest of what the GPU checks import; the
# minimal set read off tests/engine/test_gpu.py, tests/conftest.py, bench/bench_gpu.py,
# bench/bench_engine.py and the engine modules they reach:
#
#   demucs   the model code (demucs.apply/htdemucs/hdemucs/demucs/hf/repo/states/...);
#            its import-time needs are torch, einops, pyyaml, tqdm and julius. sphn and
#            lameenc (demucs.api/demucs.audio, which nothing of ours imports) and
#            huggingface_hub (imported inside demucs.hf's download only) are not carried
#   julius   demucs.demucs imports it (pure Python)
#   soundfile + cffi   the engine's WAV decode and write (soundfile's wheel bundles
#            libsndfile; it loads through cffi's compiled backend, so no pycparser)
#
# Not carried: stempeg and ffmpeg (bench_gpu falls back to a music-like signal when the
# MUSDB18 excerpt cannot be read), soxr/pyebur128 (mastering, not in the GPU checks),
# onnxruntime-gpu (the MDX-Net I/O-binding test skips without the CUDA provider).
# Python 3.12, manylinux x86_64, one version of each, no dependencies resolved (--no-deps:
# every needed one is named here). Overrides: PIP (the pip command), WHEELS (the list).
set -eu
cd "$(dirname "$0")/.."
PIP="${PIP:-python3 -m pip}"
# name==version: the versions the project's own environment runs (pyproject: demucs==4.1.0)
WHEELS="${WHEELS:-demucs==4.1.0 julius==0.2.8 soundfile==0.14.0 cffi==2.1.1}"
DEST=.whl

# .whl/ is in .gitignore; an older checkout without that line gets it in its own exclude
if ! git check-ignore -q "$DEST/x.whl" 2>/dev/null; then
  echo "/$DEST/" >>"$(git rev-parse --git-path info/exclude)"
fi
rm -rf "$DEST"
mkdir -p "$DEST"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
    manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
# shellcheck disable=SC2086
$PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$DEST" $WHEELS

echo "wheels in $DEST/ (for Python 3.12 x86_64, installed with --no-deps on the device):"
(cd "$DEST" && du -b -- *.whl | sort -k2)
total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
repo=$(git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s}')
echo "total $(( total / 1024 )) KiB of wheels; the repository's tracked files $(( repo / 1024 )) KiB;"
echo "together $(( (total + repo) / 1024 / 1024 )) MiB of the device call's 64 MiB"
