# One-command set-up: every target creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.recopt-installed
DEMO_DIR ?= /tmp/tf_recopt_demo
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install ops cuda-check gpu-core test demo bench bench-all corpus clean

$(STAMP): setup.py requirements.txt requirements-tfx.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-tfx.txt
	# TFX 1.21's Python code without its glibc-2.39-only wheels: see requirements-tfx.txt.
	$(PY) -m pip install -q --no-deps ml-metadata==1.17.1 ml-pipelines-sdk==1.21.0 tfx==1.21.0
	$(PY) -m pip install -q --no-build-isolation -e .
	touch $@

install: $(STAMP)

# Rebuilds the op library and the C++ request path of `tf-recopt serve`
# (tf_recopt.serving.request_path) after a C++ change (objects are cached in build/).
ops: $(STAMP)
	$(PY) -m custom_ops.build

# Compiles every CUDA source without a GPU (tests/test_cuda_build.py runs the
# same check inside `make test` whenever nvcc is on the PATH).
cuda-check: $(STAMP)
	$(PY) -m custom_ops.cuda_build check

# The TensorFlow-free GPU core as a shared library for the PyTorch harness
# (tests/test_gpu_core.py, bench/gpu.py) on a GPU machine.
gpu-core:
	python3 -m custom_ops.cuda_build core build/gpu_core

test: ops
	$(PY) -m pytest -q -ra tests

demo: ops
	$(PY) -m tf_recopt.demo --workdir $(DEMO_DIR)

# The peer suite (stock TF, XLA, ONNX Runtime, tf-recopt) on every zoo model,
# then its part of BENCHMARKS.md; about 10 minutes on 2 cores.
bench: ops
	$(PY) -m bench.peers
	$(PY) -m bench.report --peers

# Every unit and component benchmark as well (Faiss is the retrieval
# reference), then all of BENCHMARKS.md.
bench-all: ops
	$(PY) -m pip install -q --no-build-isolation --no-deps faiss-cpu
	$(PY) -m bench.run_all

# DeepCTR 0.9.4 / DeepMatch 0.3.2 models (installed --no-deps into
# build/corpus) exported, optimized and timed against stock TF on the Session
# path, then the corpus section of BENCHMARKS.md. Not part of `make test`
# (tests/test_corpus.py runs three of them). Add peers with
# `$(PY) -m bench.corpus --peers stock_session,recopt_session,onnxruntime,openvino`.
corpus: ops
	$(PY) -m bench.corpus
	$(PY) -m bench.report --only corpus

clean:
	rm -rf build $(VENV) tf_recopt/ops/_recopt_ops*.so
