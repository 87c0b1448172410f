"""Runs: every input accounted for, bad inputs as reject rows, kill -9 and resume, Ray, configs."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from kangaroo.data import CurateConfig, curate, list_inputs
from kangaroo.data.runner import read_journal
from tests.video.media import bad_inputs, encode

from .conftest import read_jsonl


def _small_videos(d, n=4):
    from kangaroo.synth.shots import Shot, write_shots

    os.makedirs(d, exist_ok=True)
    kinds = ["moving", "static", "text", "moving"]
    for i in range(n):
        write_shots(os.path.join(d, f"v{i}.mp4"), [Shot("moving", 3, seed=i), Shot(kinds[i % 4], 3, seed=i)],
                    width=320, height=180)
    return d


def test_every_input_is_accounted_for(tmp_path, shots_video, filter_config, bikes, bunny):
    """A folder of real videos, a synthetic one and every kind of broken input: each input is in
    the manifest (kept clips) or rejected as a whole, each clip in exactly one file."""
    d = tmp_path / "in"
    bad_inputs(d)
    shutil.copy(shots_video["path"], d / "good_shots.mp4")
    shutil.copy(bikes, d / "bikes.mp4")
    shutil.copy(bunny, d / "bunny.mp4")
    with open(os.path.join(os.fsencode(d), b"name-not-utf8-\xff.mp4"), "wb") as f:  # a hostile file name
        f.write(b"junk")
    out = tmp_path / "out"
    report = curate(str(d), str(out), filter_config, workers=0, progress=False)
    items = list_inputs(str(d))
    manifest, rejects = read_jsonl(out / "manifest.jsonl"), read_jsonl(out / "rejects.jsonl")
    sources = {r["source"] for r in manifest} | {r["source"] for r in rejects}
    assert sources == {it["source"] for it in items}  # nothing lost
    assert len({r["id"] for r in manifest}) == len(manifest)  # no duplicates
    whole = {r["source"] for r in rejects if r["level"] == "input"}
    assert not whole & {r["source"] for r in manifest}  # an input rejected as a whole has no kept clip
    clip_keys = [(r["source"], r["start_frame"]) for r in manifest + rejects if "start_frame" in r]
    assert len(clip_keys) == len(set(clip_keys))  # every shot/clip in exactly one place
    reasons = {os.path.basename(r["source"]): r["reason"] for r in rejects if r["level"] == "input"}
    assert reasons["zero.mp4"] == "not_a_video"
    assert reasons["random.mp4"] == "not_a_video"
    assert reasons["notes.mp4"] == "not_a_video"
    assert reasons["audio.mp4"] == "not_a_video"
    assert reasons["unknown_codec.mp4"] in ("unsupported_codec", "not_a_video")
    assert reasons["truncated.mp4"] in ("not_a_video", "decode_error")
    assert reasons["truncated_fast.mp4"] in ("truncated", "decode_error")
    assert reasons["no_frames.mkv"] == "empty_video"
    assert reasons["sliver.mp4"] == "too_large"
    assert reasons[os.fsdecode(b"name-not-utf8-\xff.mp4")] == "not_a_video"
    for r in rejects:
        assert r["detail"] and r["stage"]
    assert any(r["source"].endswith("good_shots.mp4") for r in manifest)
    assert {os.path.basename(r["source"]) for r in manifest} >= {"bikes.mp4", "bunny.mp4", "good_shots.mp4"}
    assert report["inputs"] == len(items) and report["pending"] == 0


def _run_cli(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "kangaroo.cli", "curate", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, **kw)


def _manifest(out):
    return [json.dumps(r, sort_keys=True) for r in read_jsonl(os.path.join(out, "manifest.jsonl"))]


@pytest.mark.slow
def test_kill9_and_resume_gives_the_same_manifest(tmp_path):
    d = _small_videos(str(tmp_path / "in"), n=4)
    ref = str(tmp_path / "ref")
    args = ["--no-captions", "--workers", "1", "--json"]
    assert _run_cli([d, "--out", ref, *args]).wait(timeout=300) == 0
    out = str(tmp_path / "out")
    for wait_lines in (0, 2):  # kill during the first input, then after two inputs are done
        p = _run_cli([d, "--out", out, *args])
        journal = os.path.join(out, "journal.jsonl")
        t0 = time.time()
        while time.time() - t0 < 120:
            n = len(open(journal).read().splitlines()) if os.path.exists(journal) else 0
            if (wait_lines == 0 and os.path.exists(journal)) or n >= wait_lines > 0:
                break
            time.sleep(0.05)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert len(read_journal(os.path.join(out, "journal.jsonl"))) < 4  # it really was interrupted
    with open(os.path.join(out, "journal.jsonl"), "a") as f:
        f.write('{"source": "/torn/line", "res')  # a write torn by the kill
    assert _run_cli([d, "--out", out, *args]).wait(timeout=300) == 0
    assert _manifest(out) == _manifest(ref)
    assert len(read_journal(os.path.join(out, "journal.jsonl"))) == 4
    # rerunning a finished run does nothing and changes nothing
    assert _run_cli([d, "--out", out, *args]).wait(timeout=300) == 0
    assert _manifest(out) == _manifest(ref)


def test_resume_refuses_another_config(tmp_path, filter_config):
    d = tmp_path / "in"
    encode(d.mkdir() or d / "a.mp4", n=60, w=64, h=48, noise=False)
    curate(str(d), str(tmp_path / "out"), filter_config, workers=0, progress=False)
    other = CurateConfig.from_dict({**filter_config.to_dict(), "timeout_s": 5.0})
    with pytest.raises(ValueError, match="different config"):
        curate(str(d), str(tmp_path / "out"), other, workers=0, progress=False)
    curate(str(d), str(tmp_path / "out"), other, workers=0, progress=False, restart=True)


@pytest.mark.slow
def test_ray_executor_matches_local(tmp_path, filter_config):
    pytest.importorskip("ray")
    d = _small_videos(str(tmp_path / "in"), n=2)
    curate(d, str(tmp_path / "local"), filter_config, executor="local", workers=0, progress=False)
    report = curate(d, str(tmp_path / "ray"), filter_config, executor="ray", workers=1, progress=False)
    assert report["executor"] == "ray" and report["processed"] == 2
    assert _manifest(tmp_path / "ray") == _manifest(tmp_path / "local")


def test_process_pool_executor(tmp_path, filter_config):
    d = _small_videos(str(tmp_path / "in"), n=2)
    curate(d, str(tmp_path / "a"), filter_config, workers=0, progress=False)
    curate(d, str(tmp_path / "b"), filter_config, workers=2, progress=False)
    assert _manifest(tmp_path / "b") == _manifest(tmp_path / "a")


def test_per_input_timeout_is_a_reject_and_the_run_goes_on(tmp_path, shots_video):
    cfg = CurateConfig(captioners=[], timeout_s=0.05)
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(shots_video["path"], d / "long.mp4")
    curate(str(d), str(tmp_path / "out"), cfg, workers=0, progress=False)
    rej = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert [r["reason"] for r in rej] == ["timeout"]


def test_config_round_trip_and_errors(tmp_path):
    cfg = CurateConfig()
    p = tmp_path / "c.yaml"
    cfg.save(str(p))
    assert CurateConfig.load(str(p)) == cfg
    with pytest.raises(ValueError, match="unknown"):
        CurateConfig.from_dict({"filterz": []})
    with pytest.raises(ValueError, match="min"):
        CurateConfig.from_dict({"filters": [{"name": "motion", "min": 2, "max": 1}]})
    with pytest.raises(KeyError, match="unknown filter"):
        CurateConfig.from_dict({"filters": [{"name": "nsfw"}]})
    with pytest.raises(ValueError, match="scenes must be a mapping"):
        CurateConfig.from_dict({"scenes": [1, 2]})
    with pytest.raises(ValueError, match="bad curate config"):
        CurateConfig.from_dict({"scenes": {"min_clip_s": "two"}})
    with pytest.raises(ValueError, match="list of mappings"):
        CurateConfig.from_dict({"filters": "motion"})
    with pytest.raises(ValueError, match="url"):
        CurateConfig.from_dict({"captioners": [{"name": "openai"}]})
    with pytest.raises(ValueError, match="unknown params"):
        from kangaroo.data.filters import build_filters
        build_filters(CurateConfig.from_dict({"filters": [{"name": "motion", "params": {"speed": 1}}]}).filters)


def test_inputs_from_list_and_records(tmp_path):
    a = encode(tmp_path / "a.mp4", n=5, w=32, h=32)
    (tmp_path / "list.txt").write_text("# videos\na.mp4\n\n" + a + "\n")
    assert [i["source"] for i in list_inputs(str(tmp_path / "list.txt"))] == [a]  # deduplicated
    (tmp_path / "recs.jsonl").write_text(json.dumps({"video": "a.mp4", "label": "cats", "caption": "x"}) + "\n")
    [it] = list_inputs(str(tmp_path / "recs.jsonl"))
    assert it["label"] == "cats" and it["caption"] == "x"
    assert [i["source"] for i in list_inputs(str(tmp_path / "*.mp4"))] == [a]
    with pytest.raises(FileNotFoundError):
        list_inputs(str(tmp_path / "nothing*.mp4"))


def test_folder_mode_accounts_for_directories_named_like_media(tmp_path, filter_config):
    """A folder input: a directory named like a video (or an image) is a reject row with its reason,
    as it is from a list file; ordinary subfolders are walked, not inputs."""
    from PIL import Image

    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    encode(d / "sub" / "good.mp4", n=30)
    (d / "clip.mp4").mkdir()
    (d / "still.JPG").mkdir()
    frames = d / "episode_fps3.mkv"
    frames.mkdir()
    for k in range(3):
        Image.new("RGB", (64, 48), (k * 60, 0, 0)).save(frames / f"{k + 1:05d}.jpg")
    items = {os.path.relpath(it["source"], d) for it in list_inputs(str(d))}
    assert items == {"clip.mp4", "still.JPG", "episode_fps3.mkv", os.path.join("episode_fps3.mkv", "00001.jpg"),
                     os.path.join("episode_fps3.mkv", "00002.jpg"), os.path.join("episode_fps3.mkv", "00003.jpg"),
                     os.path.join("sub", "good.mp4")}
    report = curate(str(d), str(tmp_path / "out"), filter_config, workers=0, progress=False)
    rejects = {os.path.relpath(r["source"], d): r for r in read_jsonl(tmp_path / "out" / "rejects.jsonl")
               if r["level"] == "input"}
    for name in ("clip.mp4", "still.JPG"):
        assert rejects[name]["reason"] == "not_a_video" and "is a directory" in rejects[name]["detail"]
    assert rejects["episode_fps3.mkv"]["reason"] == "not_a_video"
    assert "folder of 3 frames" in rejects["episode_fps3.mkv"]["detail"]
    listed = tmp_path / "list.txt"
    listed.write_text("in/clip.mp4\n")
    from_list = curate(str(listed), str(tmp_path / "out_list"), filter_config, workers=0, progress=False)
    (row,) = read_jsonl(tmp_path / "out_list" / "rejects.jsonl")
    assert (row["reason"], row["detail"]) == (rejects["clip.mp4"]["reason"], rejects["clip.mp4"]["detail"])
    assert report["inputs"] == len(items) and from_list["inputs"] == 1
