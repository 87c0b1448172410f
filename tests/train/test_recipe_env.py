"""Recipe values from the environment (${VAR}) and --set KEY=VALUE overrides."""

import os

import pytest

from kangaroo.train.recipe import Recipe
from kangaroo.train.trainer import resolve_8b

STAGE1 = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "kangaroo-8b", "stage1_image.yaml")


def test_env_substitution_and_unset_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("KANGAROO_DATA", raising=False)
    monkeypatch.setenv("KANGAROO_INIT", str(tmp_path / "m"))
    with pytest.raises(ValueError, match="KANGAROO_DATA, which is not set"):
        Recipe.load(STAGE1)
    monkeypatch.setenv("KANGAROO_DATA", "rel/data")  # relative: from where the command runs
    r = Recipe.load(STAGE1)
    assert r.data[0].path == os.path.abspath("rel/data/images/recaptioned.jsonl")
    assert r.init == str(tmp_path / "m")


def test_set_overrides_typed_and_dotted(monkeypatch, tmp_path):
    monkeypatch.setenv("KANGAROO_DATA", str(tmp_path))
    monkeypatch.setenv("KANGAROO_INIT", str(tmp_path))
    r = Recipe.load(STAGE1, overrides=["max_steps=2", "bf16=false", "lr=3e-4", "lora.r=4", "train=[projector]",
                                       "tpe=null"])
    assert (r.max_steps, r.bf16, r.lr, r.lora.r, r.lora.alpha, r.train, r.tpe) == (2, False, 3e-4, 4, 32,
                                                                                    ["projector"], None)
    with pytest.raises(ValueError, match="no key 'max_stpes'"):
        Recipe.load(STAGE1, overrides=["max_stpes=2"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        Recipe.load(STAGE1, overrides=["max_steps"])
    with pytest.raises(ValueError, match="not a mapping"):
        Recipe.load(STAGE1, overrides=["lr.x=1"])


def test_init_8b_is_never_random(monkeypatch, tmp_path):
    monkeypatch.delenv("KANGAROO_INIT", raising=False)
    with pytest.raises(ValueError, match="KANGAROO_INIT, which is not set.*kangaroo assemble"):
        resolve_8b("8b")
    monkeypatch.setenv("KANGAROO_INIT", str(tmp_path))
    with pytest.raises(ValueError, match="not a model folder"):
        resolve_8b("8b")
    (tmp_path / "config.json").write_text("{}")
    assert resolve_8b("8b") == str(tmp_path) and resolve_8b("/x") == "/x"
