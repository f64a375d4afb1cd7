# speechstream set-up. The README's two commands:
#
#   make demo   # install everything, transcribe the bundled example recording
#   make test   # install everything (+ the Debian packages the tests use), run the test suite
#
# Install order matters: torch is installed FIRST as the pinned CPU wheel (torch==2.13.0), so
# nothing later can pull a multi-GB CUDA build; numpy<2 is pinned in the same resolve as the
# project (pyctcdecode 0.5.0 needs it). Re-running is quick: a stamp file in the venv records
# the install and is only redone when pyproject.toml or the constraints change.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip
STAMP := $(VENV)/.speechstream-installed
CONSTRAINTS := .ci/constraints.txt
TORCH_SPEC ?= torch==2.13.0
EXAMPLE ?= examples/hello.wav
PYTEST_ARGS ?= --durations=15

# Debian packages the tests drive (TTS for test audio, ALSA file device, MQTT broker, browser).
APT_PACKAGES := espeak-ng flite festival festvox-kdlpc16k festvox-kallpc16k festvox-us-slt-hts sox mosquitto libportaudio2 alsa-utils chromium chromium-driver ffmpeg haproxy

.PHONY: help demo test lint install apt-deps clean-venv

help:
	@echo "make demo   - install, then: speechstream transcribe $(EXAMPLE)"
	@echo "make test   - install (+ apt packages), then: pytest"
	@echo "make lint   - ruff check, ruff format --check, mypy (configured in pyproject.toml)"

demo: install
	$(VENV)/bin/speechstream transcribe $(EXAMPLE)

test: install apt-deps
	$(VPY) -m pytest $(PYTEST_ARGS)

# Lint and types, as CI runs them before the tests (.ci/run).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

install: $(STAMP)

$(VPY):
	$(PYTHON) -m venv $(VENV) || { \
	  echo "python venv failed; installing python3-venv" >&2; \
	  $(MAKE) --no-print-directory apt-deps APT_PACKAGES=python3-venv; \
	  rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }

# The last line installs the bundled speaker-encoder weights (resemblyzer's pretrained.pt,
# Apache-2.0; see engines/speakers/embedding.py) with --no-deps: its plain `webrtcvad`
# dependency would overwrite webrtcvad-wheels' module (and imports pkg_resources, which
# setuptools >= 81 no longer has); nothing else of that package is imported.
$(STAMP): pyproject.toml $(CONSTRAINTS) | $(VPY)
	$(PIP) install -q --upgrade-strategy only-if-needed -c $(CONSTRAINTS) "$(TORCH_SPEC)"
	$(PIP) install -q --upgrade-strategy only-if-needed -c $(CONSTRAINTS) "numpy<2" -e ".[test]"
	$(PIP) install -q --no-deps "resemblyzer==0.1.4"
	@touch $@

# Installs only the packages that are missing; runs apt-get update first, and only then.
apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
	  echo "apt: installing$$missing"; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

clean-venv:
	rm -rf $(VENV)
