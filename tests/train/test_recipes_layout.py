"""The recipes' layout: every recipe parses; kangaroo-smol's curriculum is listed in one place
(recipes/smol/curriculum.yaml, which `make smol` runs); every data path of a smol recipe names a
set `make smol-data` generates (recipes/smol/data.yaml) and a file `kangaroo synth` writes for
that set's options."""

from __future__ import annotations

import functools
import glob
import json
import os
import re

import pytest

from kangaroo.synth.plan import load_plan, outputs, run_plan, synth_argv
from kangaroo.train.curriculum import expand_stages, last_model, read_curriculum
from kangaroo.train.recipe import Recipe

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RECIPES = os.path.join(ROOT, "recipes")
SMOL = os.path.join(RECIPES, "smol")
CURRICULUM = os.path.join(SMOL, "curriculum.yaml")
PLAN = os.path.join(SMOL, "data.yaml")
DATA = os.path.join(ROOT, "data", "smol")  # where `make smol-data` writes (--root data/smol)
NOT_RECIPES = {CURRICULUM, PLAN}


@functools.lru_cache(maxsize=1)
def plan_sets() -> dict:
    """recipes/smol/data.yaml's sets by folder (checked once: each entry goes through the CLI's parser)."""
    return {s["out"]: s for s in load_plan(PLAN)}


def all_recipes() -> list[str]:
    files = sorted(glob.glob(os.path.join(RECIPES, "**", "*.yaml"), recursive=True))
    return [f for f in files if f not in NOT_RECIPES]


def smol_recipes() -> list[str]:
    return [f for f in all_recipes() if f.startswith(SMOL + os.sep)]


def test_every_recipe_parses(monkeypatch):
    monkeypatch.setenv("KANGAROO_DATA", "/data")  # the 8B recipes read ${KANGAROO_DATA} / ${KANGAROO_INIT}
    monkeypatch.setenv("KANGAROO_INIT", "/models/kangaroo-8b-init")
    files = all_recipes()
    assert any("/experiments/" in f for f in files) and any("kangaroo-8b" in f for f in files)
    for f in files:  # the 8B recipes' paths may hold ${KANGAROO_DATA}: they are only parsed
        r = Recipe.load(f)
        assert r.max_steps >= 1 and r.data, f


def test_curriculum_lists_the_shipped_stages_in_order():
    stages = read_curriculum(CURRICULUM)
    names = [os.path.relpath(s, SMOL) for s in stages]
    assert names[0] == "0_tags.yaml" and names[-1] == "7v_copy_format_with_content.yaml"
    assert all(os.path.dirname(n) == "" for n in names), "shipped stages live in recipes/smol/ itself"
    assert len(set(names)) == len(names)
    # in curriculum order: by the stage number, then the letter (4 < 4b < 4c < 6 < 6c ...)
    key = [(int(re.match(r"\d+", n).group()), n.split("_")[0]) for n in names]
    assert key == sorted(key)
    # every recipe at the top of recipes/smol is a stage, or marked in the file as being measured
    text = open(CURRICULUM).read()
    for f in glob.glob(os.path.join(SMOL, "*.yaml")):
        if f in NOT_RECIPES or f in stages:
            continue
        name = os.path.basename(f)
        assert re.search(rf"^\s*#\s*-\s*{re.escape(name)}\b.*being measured", text, re.M), (
            f"{name} is in recipes/smol/ but neither a stage of curriculum.yaml nor marked 'being measured'; "
            "experiments go to recipes/smol/experiments/")
    # kangaroo curriculum expands the file to its stages; the last stage's model is packaged
    assert expand_stages([CURRICULUM]) == stages
    assert last_model([CURRICULUM], "runs/smol") == os.path.join("runs/smol", "18_copy_format_with_content", "model")


def test_make_smol_reads_the_two_lists():
    mk = open(os.path.join(ROOT, "Makefile")).read()
    smol = mk[mk.index("\nsmol:"):]
    assert "recipes/smol/curriculum.yaml" in smol and "kangaroo curriculum" in smol
    assert not re.search(r"recipes/smol/\w+\.yaml", smol.replace("recipes/smol/curriculum.yaml", ""))
    data = mk[mk.index("\nsmol-data:"):mk.index("\nsmol:")]
    assert "kangaroo.synth.plan recipes/smol/data.yaml --root data/smol" in data
    assert "kangaroo synth " not in data  # no set generated outside the plan


def test_every_experiment_has_its_line():
    readme = open(os.path.join(SMOL, "experiments", "README.md")).read()
    files = glob.glob(os.path.join(SMOL, "experiments", "*.yaml"))
    assert len(files) >= 6
    for f in files:
        assert f"`{os.path.basename(f)}`" in readme, os.path.basename(f)


def test_the_plan_holds_the_held_out_sets():
    sets = {s["out"]: s for s in load_plan(PLAN)}
    want = {"heldout_gen_short": (2001, 60, 8, 30, False), "heldout_gen_long": (2002, 30, 60, 180, True),
            "val_short": (1999, 30, 8, 30, False), "final_short": (3001, 60, 8, 30, False),
            "final_long": (3002, 30, 60, 180, True), "heldout_short": (1001, 60, 8, 30, False),
            "heldout_long": (1002, 30, 60, 180, True), "heldout_long2": (1003, 60, 60, 180, True)}
    for out, (seed, n, lo, hi, needle) in want.items():
        s = sets[out]
        assert (s["seed"], s["num_videos"], s["min_seconds"], s["max_seconds"], bool(s.get("needle"))) == \
            (seed, n, lo, hi, needle), out
    seeds = [s["seed"] for s in sets.values()]
    assert len(set(seeds)) == len(seeds), "two sets with one seed would be the same videos"
    held = [s for o, s in sets.items() if o.startswith(("heldout", "val", "final"))]
    assert all(s["seed"] >= 1000 for s in held) and all(s["seed"] < 1000 for s in sets.values() if s not in held)


def _data_paths(recipe_file: str) -> list[str]:
    r = Recipe.load(recipe_file)
    srcs = r.data + r.eval_data
    return [d.path for d in srcs] + [d.root for d in srcs if d.root]


@pytest.mark.parametrize("recipe_file", smol_recipes(), ids=lambda f: os.path.relpath(f, SMOL))
def test_smol_data_paths_are_files_make_smol_data_writes(recipe_file):
    r = Recipe.load(recipe_file)
    if r.objective == "lm" and os.path.dirname(recipe_file) == SMOL:  # the curriculum's stages: validated and logged (held-out sets only: never a training set)
        assert r.eval_data and r.eval_every and "tensorboard" in r.loggers, recipe_file
        assert all("/val_short/" in d.path for d in r.eval_data)
    sets = plan_sets()
    for p in _data_paths(recipe_file):
        rel = os.path.relpath(os.path.normpath(p), DATA)
        assert not rel.startswith(".."), f"{p} is outside data/smol/ (paths are relative to the recipe file)"
        folder, name = os.path.split(rel)
        assert folder in sets, f"{rel}: no set {folder!r} in recipes/smol/data.yaml"
        assert name in outputs(sets[folder]), f"{rel}: kangaroo synth {' '.join(synth_argv(sets[folder], 'data/smol')[1:])} writes no {name}"


def test_the_outputs_list_is_what_kangaroo_synth_writes(tmp_path):
    """The file list the path check relies on, against a real (tiny) run of the plan."""
    plan = tmp_path / "plan.yaml"
    plan.write_text("sets:\n"
                    "  - {out: a, num_videos: 1, min_seconds: 1, max_seconds: 1, seed: 5, fps: 2, width: 64, height: 48}\n"
                    "  - {out: 'b/s{seed}', seeds: [6], num_videos: 1, min_seconds: 1, max_seconds: 1, fps: 2, width: 64,"
                    " height: 48, needle: true, images_per_video: 1}\n")
    root = str(tmp_path / "data")
    assert [d["out"] for d in run_plan(str(plan), root)] == ["a", "b/s6"]
    for s in load_plan(str(plan)):
        assert sorted(os.listdir(os.path.join(root, s["out"]))) == sorted(outputs(s))
    m = json.load(open(os.path.join(root, "b/s6", "manifest.json")))
    assert m["seed"] == 6 and m["base_config"]["needle"] and m["images_per_video"] == 1 and m["base_config"]["width"] == 64
    # a second run skips what is there with the same options, and regenerates what is not
    os.remove(os.path.join(root, "a", "mcqa.json"))
    again = run_plan(str(plan), root)
    assert again[0].get("generated") and again[1].get("skipped")
    assert os.path.exists(os.path.join(root, "a", "mcqa.json"))


def test_a_plan_entry_must_be_kangaroo_synth_options(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("sets:\n  - {out: a, num_videos: 1, frobnicate: 3}\n")
    with pytest.raises(ValueError, match="frobnicate"):
        load_plan(str(plan))
    plan.write_text("sets:\n  - {out: a, seed: 1}\n  - {out: a, seed: 2}\n")
    with pytest.raises(ValueError, match="twice"):
        load_plan(str(plan))
