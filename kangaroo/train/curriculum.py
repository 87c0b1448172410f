"""A curriculum file: the stage recipes of one curriculum, in order, in one YAML file.

    # recipes/smol/curriculum.yaml
    stages:
      - 0_tags.yaml
      - 1_image.yaml

Stage paths are relative to the file. ``kangaroo curriculum recipes/smol/curriculum.yaml --out
runs/smol`` runs them (any argument that is a curriculum file is replaced by its stages), and
``python -m kangaroo.train.curriculum FILE --last-model RUN`` prints where the run's last stage
writes its model (``make smol`` packages it from there).
"""

from __future__ import annotations

import argparse
import os
import sys

import yaml


def read_curriculum(path: str) -> list[str] | None:
    """The stage recipe paths a curriculum file lists (absolute), or None if ``path`` is no such file."""
    with open(path) as f:
        d = yaml.safe_load(f)
    if not (isinstance(d, dict) and "stages" in d):
        return None
    extra = set(d) - {"stages"}
    stages = d["stages"]
    if extra or not (isinstance(stages, list) and stages and all(isinstance(s, str) and s for s in stages)):
        raise ValueError(f"{path}: a curriculum file has only 'stages', a non-empty list of recipe paths")
    base = os.path.dirname(os.path.abspath(path))
    out = [s if os.path.isabs(s) else os.path.join(base, s) for s in stages]
    missing = [s for s in out if not os.path.isfile(s)]
    if missing:
        raise FileNotFoundError(f"{path}: stage recipes not found: {missing}")
    return out


def expand_stages(paths: list[str]) -> list[str]:
    """Recipe paths with every curriculum file among them replaced by its stages."""
    out = []
    for p in paths:
        stages = read_curriculum(p)
        out += stages if stages is not None else [p]
    return out


def stage_dir(out: str, index: int, recipe) -> str:
    """Where ``run_curriculum`` puts stage ``index`` (from 0) of a run in ``out``."""
    return os.path.join(out, f"{index + 1}_{recipe.name}")


def last_model(paths: list[str], out: str) -> str:
    from .recipe import Recipe

    stages = expand_stages(paths)
    return os.path.join(stage_dir(out, len(stages) - 1, Recipe.load(stages[-1])), "model")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kangaroo.train.curriculum")
    ap.add_argument("recipes", nargs="+", help="curriculum files and/or stage recipes, in order")
    ap.add_argument("--last-model", metavar="RUN", help="print the model folder of the last stage of a run in RUN")
    a = ap.parse_args(argv)
    try:
        if a.last_model:
            print(last_model(a.recipes, a.last_model))
        else:
            print("\n".join(os.path.relpath(s) for s in expand_stages(a.recipes)))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
