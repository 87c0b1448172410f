"""``kangaroo curate`` from the command line, and the trainer reading its manifest."""

import json
import subprocess
import sys

import yaml

from .conftest import read_jsonl


def test_cli_print_config_round_trips(tmp_path):
    r = subprocess.run([sys.executable, "-m", "kangaroo.cli", "curate", "--print-config"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load(r.stdout)
    assert [f["name"] for f in cfg["filters"]] == ["text_coverage", "face_coverage", "motion"]
    (tmp_path / "c.yaml").write_text(r.stdout.replace("max_clip_s: 60.0", "max_clip_s: 2.5"))
    r = subprocess.run([sys.executable, "-m", "kangaroo.cli", "curate", "--print-config", "--config",
                        str(tmp_path / "c.yaml")], capture_output=True, text=True, timeout=120)
    assert yaml.safe_load(r.stdout)["scenes"]["max_clip_s"] == 2.5
    (tmp_path / "bad.yaml").write_text("scenes: {min_clip_s: 5, max_clip_s: 1}\n")
    r = subprocess.run([sys.executable, "-m", "kangaroo.cli", "curate", "x", "--out", str(tmp_path / "o"),
                        "--config", str(tmp_path / "bad.yaml")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "min_clip_s" in r.stderr


def test_cli_run_splits_long_shots_and_trainer_reads_the_manifest(tmp_path, shots_video):
    (tmp_path / "c.yaml").write_text("scenes: {max_clip_s: 2.5}\nfilters: []\ncaptioners: []\n")
    r = subprocess.run([sys.executable, "-m", "kangaroo.cli", "curate", shots_video["path"], "--out",
                        str(tmp_path / "out"), "--config", str(tmp_path / "c.yaml"), "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    man = read_jsonl(tmp_path / "out" / "manifest.jsonl")
    assert report["manifest_rows"] == len(man) == 8  # four 4 s shots, each split in two 2 s parts
    assert all(m["duration"] <= 2.5 and m["parts"] == 2 for m in man)
    assert (tmp_path / "out" / "manifest.parquet").exists() and (tmp_path / "out" / "report.png").exists()

    # the trainer's manifest format: each clip is a video span; timestamps start at the clip's start
    from kangaroo.train.data import load_media, to_samples
    from kangaroo.train.recipe import DataSource, Recipe

    rows = [{**m, "caption": f"clip {i}"} for i, m in enumerate(man)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(m) + "\n" for m in rows))
    samples = to_samples(DataSource(str(tmp_path / "m.jsonl"), format="manifest"))
    assert len(samples) == 8 and samples[3].span == (man[3]["start"], man[3]["end"])
    recipe = Recipe(image_size=28, min_frames=4, max_frames=4)
    pixels, ts = load_media(samples[3], recipe, patch=14)
    assert pixels.shape[0] == 4
    assert 0 <= float(ts.min()) and float(ts.max()) < man[3]["duration"]
