#!/usr/bin/env bash
# Every GPU check and benchmark of stembridge in one call (issue 16), at most ~9 minutes
# on one data-centre GPU:
#
#     bash bench/device_check.sh                 # from the repository root
#     PY=/path/to/python bash bench/device_check.sh
#
# The python: $PY, else .venv/bin/python (the README's `make test` set-up: the project,
# its `test` extra, a CUDA build of torch), else python3. On the lent GPU machine (the
# device tool; offline, its python3 is Python 3.12 with a CUDA torch and most of what we
# need, not demucs or soundfile), a session lent one runs, here first:
#
#     bash bench/device_wheels.sh                # the missing wheels into .whl/
#
# then the device tool's run with carry [".whl"], command "bash bench/device_check.sh"
# and timeout_s about 560. Where .whl/ is present this script first installs its wheels
# with pip --no-index --no-deps into /tmp/site and puts that on PYTHONPATH.
# onnxruntime-gpu is optional (the MDX-Net I/O-binding test skips without it). Nothing
# is downloaded: the models are random-weight ones of the released architecture made on
# the spot (engine.models.testmodels); the audio is the MUSDB18 excerpt stempeg ships, or
# where it cannot be read (no stempeg or ffmpeg, as on the device machine) a
# deterministic music-like signal (bench_gpu says which).
#
# Stages, each time-boxed (`timeout`), each printing as it goes; a stage that fails
# prints its error and the script goes on:
#   1. the machine: nvidia-smi, torch, CUDA, cuDNN, onnxruntime versions and providers,
#      and the import of everything the checks use (a missing wheel shows here)
#   2. pytest -m gpu tests/engine/test_gpu.py
#   3. bench/bench_gpu.py: htdemucs, a 4-minute song, fp32 (TF32 off) and bf16, batch
#      sizes 1 4 8 16, against apply_model on the same GPU, the CUDA-graphs row
# Overrides: STAGE_TESTS_S, STAGE_BENCH_S (seconds per stage), BENCH_ARGS.
set -u
cd "$(dirname "$0")/.." || exit 1
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
if compgen -G ".whl/*.whl" >/dev/null; then  # carried wheels (bench/device_wheels.sh)
  echo "installing $(ls .whl/*.whl | wc -l) carried wheels into /tmp/site"
  timeout 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "cannot install the wheels in .whl/"; exit 1; }
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 STEMBRIDGE_OFFLINE=1 HF_HUB_OFFLINE=1
STAGE_TESTS_S="${STAGE_TESTS_S:-150}"
STAGE_BENCH_S="${STAGE_BENCH_S:-280}"
BENCH_ARGS="${BENCH_ARGS:---seconds 240 --batches 1 4 8 16 --precision fp32 bf16 --repeats 1}"
START=$(date +%s)
failed=()

stage() {  # stage NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo
  echo "===== $name (time box ${limit}s, at $(( $(date +%s) - START ))s) ====="
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    [ "$rc" -eq 124 ] && echo "----- $name: stopped by its time box (${limit}s)"
    echo "----- $name: exit status $rc"
    failed+=("$name ($rc)")
  fi
}

stage "machine" 60 bash -c '
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.max.sm \
      --format=csv || nvidia-smi
  else
    echo "no nvidia-smi"
  fi
  "$0" -c "
import platform, torch
print(\"python\", platform.python_version(), \"torch\", torch.__version__, \"CUDA\",
      torch.version.cuda, \"cuDNN\", torch.backends.cudnn.version())
print(\"cuda available\", torch.cuda.is_available(), \"devices\", torch.cuda.device_count())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(p.name, round(p.total_memory / 2**30, 1), \"GiB, capability\", p.major, p.minor,
          \"bf16\", torch.cuda.is_bf16_supported())
try:
    import onnxruntime as ort
    print(\"onnxruntime\", ort.__version__, ort.get_available_providers())
except ImportError as exc:
    print(\"onnxruntime: not installed\", exc)
from importlib.metadata import version
import demucs.apply, demucs.hf, demucs.repo, demucs.htdemucs, demucs.states, julius, soundfile
import engine.models.demucs, engine.models.testmodels, engine.models.mdx, engine.separator
import engine.chunking, engine.transfer, engine.graphs, engine.device, engine.acceleration
import engine.artifacts, engine.audio, bench.bench_engine, bench.bench_gpu, tests.conftest
print(\"imports ok:\", *(f\"{n} {version(n)}\" for n in (\"demucs\", \"julius\", \"soundfile\",
      \"cffi\")), \"libsndfile\", soundfile.__libsndfile_version__)
"' "$PY"

stage "gpu tests" "$STAGE_TESTS_S" "$PY" -m pytest -p no:cacheprovider -n 0 -q -rs \
  --durations=10 -m gpu tests/engine/test_gpu.py

# shellcheck disable=SC2086
stage "bench_gpu" "$STAGE_BENCH_S" "$PY" bench/bench_gpu.py $BENCH_ARGS \
  --budget "$(( STAGE_BENCH_S - 30 ))"

echo
echo "===== device_check done in $(( $(date +%s) - START ))s; failed stages: ${failed[*]:-none}"
