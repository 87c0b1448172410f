"""A list of synthetic data sets to generate, in one YAML file (``recipes/smol/data.yaml``).

Each entry is one ``kangaroo synth`` run: ``out`` (a folder under the root given on the command
line) and that command's options with underscores (``num_videos``, ``min_seconds``,
``max_seconds``, ``seed``, ``needle: true``, ``images_per_video``, ...). An entry with ``seeds: [...]``
instead of ``seed`` stands for one set per seed, ``{seed}`` in ``out`` replaced by it::

    sets:
      - {out: short, num_videos: 400, min_seconds: 8, max_seconds: 30, seed: 1, images_per_video: 8}
      - {out: "mix/short{seed}", seeds: [11, 12], num_videos: 400, min_seconds: 8, max_seconds: 30}

``python -m kangaroo.synth.plan recipes/smol/data.yaml --root data/smol`` generates every set
(``make smol-data``), skipping a folder whose ``manifest.json`` says it was made with the same
options; ``--dry-run`` prints the equivalent ``kangaroo synth`` commands. Options go through the
``kangaroo synth`` parser, so a set here is exactly what that command writes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys

import yaml

# what `kangaroo synth` writes into --out (kangaroo/synth/dataset.py); images/ and the two image
# files only with --images-per-video
OUTPUTS = ("videos", "timelines.json", "captions.json", "mcqa.json", "openqa.json", "conversations.json",
           "mc_conversations.json", "manifest.json")
IMAGE_OUTPUTS = ("images", "images.json", "image_mcqa.json")


def outputs(entry: dict) -> tuple[str, ...]:
    """The files and folders ``kangaroo synth`` writes for one set's options."""
    return OUTPUTS + (IMAGE_OUTPUTS if int(entry.get("images_per_video") or 0) > 0 else ())


def load_plan(path: str) -> list[dict]:
    """The plan's sets, ``seeds`` lists expanded: one dict per ``kangaroo synth`` run (``out`` relative)."""
    with open(path) as f:
        d = yaml.safe_load(f) or {}
    if not isinstance(d, dict) or not isinstance(d.get("sets"), list):
        raise ValueError(f"{path}: a data plan is a mapping with a list 'sets'")
    sets = []
    for i, e in enumerate(d["sets"]):
        if not (isinstance(e, dict) and isinstance(e.get("out"), str) and e["out"]):
            raise ValueError(f"{path}: set {i} needs an 'out' folder")
        if "seeds" in e:
            if "seed" in e or not (isinstance(e["seeds"], list) and e["seeds"]) or "{seed}" not in e["out"]:
                raise ValueError(f"{path}: set {i}: 'seeds' is a list, without 'seed', and 'out' has {{seed}}")
            rest = {k: v for k, v in e.items() if k != "seeds"}
            sets += [{**rest, "out": e["out"].format(seed=s), "seed": s} for s in e["seeds"]]
        else:
            sets.append(dict(e))
    outs = [s["out"] for s in sets]
    dup = sorted({o for o in outs if outs.count(o) > 1})
    if dup:
        raise ValueError(f"{path}: folders listed twice: {dup}")
    for s in sets:
        synth_argv(s, "ROOT")  # every option must be one kangaroo synth knows
    return sets


def synth_argv(entry: dict, root: str) -> list[str]:
    """The ``kangaroo synth`` arguments of one set (``--quiet`` added), checked by its parser."""
    from ..cli import build_parser

    argv = ["synth", "--out", os.path.join(root, entry["out"])]
    for k, v in entry.items():
        if k == "out":
            continue
        flag = "--" + k.replace("_", "-")
        if v is True:
            argv.append(flag)
        elif v is False or v is None:
            continue
        else:
            argv += [flag, str(v)]
    argv.append("--quiet")
    with contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:
            raise ValueError(f"set {entry['out']!r}: not kangaroo synth options: {err.getvalue().strip()}") from None
    if args.cmd != "synth":
        raise ValueError(f"set {entry['out']!r}: bad options")
    return argv


def is_done(entry: dict, root: str) -> bool:
    """The set's folder holds every output and a manifest made with these options."""
    from ..cli import build_parser

    folder = os.path.join(root, entry["out"])
    if not all(os.path.exists(os.path.join(folder, f)) for f in outputs(entry)):
        return False
    try:
        with open(os.path.join(folder, "manifest.json")) as f:
            m = json.load(f)
    except (OSError, ValueError):
        return False
    a = build_parser().parse_args(synth_argv(entry, root))
    base = m.get("base_config") or {}
    want = {"seed": a.seed, "num_videos": a.num_videos, "min_seconds": a.min_seconds, "max_seconds": a.max_seconds,
            "vary": not a.no_vary, "images_per_video": a.images_per_video, "needle_image_share": a.needle_images}
    want_base = {"fps": a.fps, "width": a.width, "height": a.height, "num_objects": a.objects,
                 "scene_cuts": a.cuts, "text": a.text, "static": a.static, "needle": a.needle, "uneven": a.uneven}
    return (all(m.get(k) == v for k, v in want.items())
            and all(base.get(k) == v for k, v in want_base.items()))


def run_plan(path: str, root: str, dry_run: bool = False, force: bool = False) -> list[dict]:
    from ..cli import build_parser

    done = []
    for s in load_plan(path):
        argv = synth_argv(s, root)
        if dry_run:
            print("kangaroo " + " ".join(argv))
            continue
        if not force and is_done(s, root):
            done.append({"out": s["out"], "skipped": "already generated with these options"})
            continue
        args = build_parser().parse_args(argv)
        with contextlib.redirect_stdout(io.StringIO()):  # kangaroo synth prints its manifest
            args.func(args)
        done.append({"out": s["out"], "generated": True})
        print(f"generated {os.path.join(root, s['out'])}", file=sys.stderr)
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kangaroo.synth.plan", description=__doc__.split("\n")[0])
    ap.add_argument("plan", help="a data plan (YAML), e.g. recipes/smol/data.yaml")
    ap.add_argument("--root", required=True, help="the folder the sets' 'out' paths are under, e.g. data/smol")
    ap.add_argument("--dry-run", action="store_true", help="print the kangaroo synth commands only")
    ap.add_argument("--force", action="store_true", help="regenerate sets that are already there")
    a = ap.parse_args(argv)
    try:
        run_plan(a.plan, a.root, dry_run=a.dry_run, force=a.force)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
