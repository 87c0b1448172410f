"""Every recipe value is checked when the recipe is loaded: one line naming the file and the key."""

import os
import subprocess
import sys

import pytest

from kangaroo.train import DataSource, LoraConfig, Recipe

BAD = [
    ("max_steps: \"two\"", "max_steps: expected an integer, got 'two'"),
    ("max_steps: 2.5", "max_steps: expected an integer, got 2.5"),
    ("max_steps: true", "max_steps: expected an integer, got True"),
    ("lr: fast", "lr: expected a number, got 'fast'"),
    ("lr: -0.5", "lr: must be > 0, got -0.5"),
    ("lr: .nan", "lr: must be a finite number"),
    ("llm_lr: 0", "llm_lr: must be > 0, got 0"),
    ("warmup_steps: -5", "warmup_steps: must be >= 0, got -5"),
    ("image_size: [1]", "image_size: expected an integer, got [1]"),
    ("image_size: 4", "image_size: must be >= 14, got 4"),
    ("train: projector", "train: expected a list of strings, got 'projector'"),
    ("train: [projector, 7]", "train[1]: expected a string, got 7"),
    ("train: []", "train: at least one module"),
    ("train: [eyes]", "train: unknown modules to train: ['eyes']"),
    ("bf16: yes please", "bf16: expected true or false, got 'yes please'"),
    ("seed: -1", "seed: must be >= 0, got -1"),
    ("grad_clip: 0", "grad_clip: must be > 0, got 0"),
    ("weight_decay: -0.1", "weight_decay: must be >= 0, got -0.1"),
    ("save_every: 0", "save_every: must be >= 1, got 0"),
    ("min_frames: 8\nmax_frames: 4", "min_frames, max_frames: need 1 <= min_frames <= max_frames, got 8, 4"),
    ("seconds_per_frame: 0", "seconds_per_frame: must be > 0"),
    ("name: a/b", "name: must be a non-empty name without '/'"),
    ("tpe: 3", "tpe: expected a string or null, got 3"),
    ("lora: [1]", "lora: expected a mapping (LoraConfig) or null, got [1]"),
    ("lora: {r: 0}", "lora: r: must be >= 1, got 0"),
    ("lora: {dropout: 1.5}", "lora: dropout: must be >= 0.0 and < 1.0, got 1.5"),
    ("lora: {targets: q_proj}", "lora: targets: expected a list of strings, got 'q_proj'"),
    ("lora: {rank: 4}", "lora: unknown keys: ['rank']"),
    ("data: [x.json]", "data[0]: expected a mapping (DataSource), got"),
    ("data: 5", "data: expected a list of mappings (DataSource), got 5"),
    ("data: [{path: x.json, weight: 0}]", "data[0]: weight: must be > 0, got 0"),
    ("data: [{path: x.json, weight: heavy}]", "data[0]: weight: expected a number, got 'heavy'"),
    ("data: [{path: x.json, format: mcq}]", "data[0]: format: unknown data format 'mcq'"),
    ("data: [{path: x.json, format: mcqa, shuffle_options: maybe}]",
     "data[0]: shuffle_options: expected true or false, got 'maybe'"),
    ("data: [{path: x.json, format: llava, shuffle_options: true}]",
     "data[0]: shuffle_options: only mcqa and mcqa_fact sources have options, not 'llava'"),
    ("data: [{path: x.json, format: mcqa, reply: sentence}]",
     "data[0]: reply: must be one of letter, text_letter, got 'sentence'"),
    ("data: [{path: x.json, format: openqa, reply: text_letter}]",
     "data[0]: reply: only mcqa and mcqa_fact sources have options, not 'openqa'"),
    ("data: [{path: x.json, families: count}]", "data[0]: families: expected a list of strings or null"),
    ("data: [{path: x.json, families: []}]", "data[0]: families: an empty list keeps no record"),
    ("data: [{path: x.json, wieght: 2}]", "data[0]: unknown keys: ['wieght']"),
    ("frames: 3", "unknown recipe keys: ['frames']"),
    ("max_steps: [1, 2", "not valid YAML (expected ',' or ']', but got '<stream end>' at line 2, column 1)"),
    ("lr: 1e-4\n  warmup_steps: 3", "not valid YAML (mapping values are not allowed here at line 2, column 15)"),
    ("- lr: 1", "a recipe is a YAML mapping"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_bad_values_name_the_file_and_the_key(text, message, tmp_path):
    path = tmp_path / "stage.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ValueError) as e:
        Recipe.load(str(path))
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_good_values_still_load(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("lr: 1e-4\nllm_lr: 2\nmax_steps: 3\nwarmup_steps: 0\ntrain: [projector]\n"
                    "data: [{path: q.json, format: mcqa_fact, shuffle_options: true, families: [count]}]\n"
                    "lora: {r: 4, alpha: 8}\n")
    r = Recipe.load(str(path))
    assert r.lr == 1e-4 and isinstance(r.lr, float)  # YAML 1.1 reads 1e-4 as a string: taken as the number
    assert r.llm_lr == 2.0 and isinstance(r.llm_lr, float)
    assert r.data[0].shuffle_options is True and r.data[0].families == ["count"] and r.lora.r == 4


def test_direct_construction_is_checked_too():
    with pytest.raises(ValueError, match="max_steps: expected an integer"):
        Recipe(max_steps="two")
    with pytest.raises(ValueError, match="weight: must be > 0"):
        DataSource("x.json", weight=-1)
    with pytest.raises(ValueError, match="alpha: must be > 0"):
        LoraConfig(alpha=0)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "kangaroo.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_train_bad_recipe_is_one_line_and_writes_nothing(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("max_steps: two\n")
    r = _cli("train", "--recipe", str(path), "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr == f"error: {path}: max_steps: expected an integer, got 'two' (str)\n"
    assert not (tmp_path / "run").exists()


def test_curriculum_checks_every_stage_before_the_first_trains(tmp_path):
    (tmp_path / "qa.json").write_text("[]")
    good = tmp_path / "1_good.yaml"
    good.write_text("name: one\ninit: smol\nmax_steps: 1\ndata: [{path: qa.json, format: mcqa}]\n")
    out = tmp_path / "curr"
    cases = [("lr: fast\n", "lr: expected a number, got 'fast' (str)"),
             ("init: previous\ndata: [{path: missing.json}]\n",
              f"data[0]: path: no such file {tmp_path / 'missing.json'}"),
             ("init: previous\n", "data: the stage has no data sources")]
    for text, message in cases:
        second = tmp_path / "2_second.yaml"
        second.write_text("name: two\n" + text)
        r = _cli("curriculum", str(good), str(second), "--out", str(out), "--quiet")
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr == f"error: {second}: {message}\n"
        assert not out.exists()  # stage one did not train
    r = _cli("curriculum", str(tmp_path / "2_second.yaml"), str(good), "--out", str(out))
    assert r.returncode == 2 and "the first stage cannot start from 'previous'" in r.stderr and not out.exists()
