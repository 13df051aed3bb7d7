# One command to set up and run the demo, one to set up and run the tests.
# CPU-only machines get the CPU build of torch; with an NVIDIA GPU (nvidia-smi
# present) pip's default CUDA build. Override with `make TORCH=... demo`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 'torch>=2.4,<3' || echo 'torch==2.13.0')
BIN := $(VENV)/bin

.PHONY: demo test setup setup-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/fibtui demo

# FIBTUI_INFRA_UP=1: the tests start a real Slurm (munge, slurmctld, slurmd) and sshd on
# 127.0.0.1 (tests/infra/up.sh, as root; Debian packages installed if missing) and stop them by PID.
test: setup
	FIBTUI_INFRA_UP=1 $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) fibtui-demo
