"""Each filter makes the expected decision on videos with known content, synthetic and real."""

import os

import pytest

from kangaroo.data import CurateConfig, curate

from .conftest import read_jsonl


@pytest.fixture(scope="module")
def shots_run(shots_video, filter_config, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run"))
    report = curate(shots_video["path"], out, filter_config, workers=0, progress=False)
    rows = read_jsonl(os.path.join(out, "manifest.jsonl")) + read_jsonl(os.path.join(out, "rejects.jsonl"))
    return report, {r["start_frame"]: r for r in rows}


def test_cuts_are_frame_accurate(shots_video, shots_run):
    _, rows = shots_run
    firsts = [s["first_frame"] for s in shots_video["shots"]]
    assert sorted(rows) == firsts
    for s, nxt in zip(shots_video["shots"], firsts[1:] + [shots_video["num_frames"]]):
        r = rows[s["first_frame"]]
        assert r["end_frame"] == nxt
        assert r["start"] == pytest.approx(s["first_frame"] / shots_video["fps"], abs=1e-3)  # the frame's own time


def test_each_filter_decides_as_expected(shots_video, shots_run):
    _, rows = shots_run
    by_kind = {s["kind"] + str(i): rows[s["first_frame"]] for i, s in enumerate(shots_video["shots"])}
    assert "reason" not in by_kind["moving0"], by_kind["moving0"]  # kept: in the manifest
    assert by_kind["static1"]["reason"] == "motion"
    assert by_kind["text2"]["reason"] == "text_coverage"
    assert by_kind["face3"]["reason"] == "face_coverage"
    assert by_kind["moving4"]["reason"] == "too_short"
    # every filter's score is kept, pass or fail, so thresholds can change without recomputing
    s = {k: v["scores"] for k, v in by_kind.items() if "scores" in v}
    assert s["text2"]["text_coverage"] > 0.15 > 0.02 > max(s["moving0"]["text_coverage"], s["static1"]["text_coverage"],
                                                          s["face3"]["text_coverage"])
    assert s["face3"]["face_coverage"] > 0.05 > 0.0 == s["moving0"]["face_coverage"] == s["text2"]["face_coverage"]
    assert s["static1"]["motion"] < 0.05 < 1.0 < s["moving0"]["motion"]
    assert by_kind["static1"]["failed"] == ["motion"]


def test_report_counts_and_plot(shots_run):
    report, _ = shots_run
    assert report["clip_rejects"] == {"scenes:too_short": 1, "filter:motion": 1, "filter:text_coverage": 1,
                                      "filter:face_coverage": 1}
    assert report["manifest_rows"] == 1
    assert {"decode", "scenes", "text_coverage", "face_coverage", "motion"} <= set(report["throughput"])


def test_bikes_cuts_match_pyscenedetect(bikes, tmp_path):
    """Our single decode pass finds the same cuts as PySceneDetect's own pipeline on a real video."""
    from scenedetect import ContentDetector, detect

    theirs = [s[0].frame_num for s in detect(bikes, ContentDetector(min_scene_len=15))][1:]
    cfg = CurateConfig(captioners=[], filters=[])
    cfg.scenes.min_clip_s = 0.1
    cfg.scenes.analysis_width = 256
    curate(bikes, str(tmp_path), cfg, workers=0, progress=False)
    rows = read_jsonl(tmp_path / "manifest.jsonl") + read_jsonl(tmp_path / "rejects.jsonl")
    ours = sorted(r["start_frame"] for r in rows)[1:]
    assert len(theirs) >= 4
    assert len(ours) == len(theirs)
    assert max(abs(a - b) for a, b in zip(ours, theirs)) <= 1  # PySceneDetect downscales differently


def test_real_video_without_text_or_faces_passes(bunny, tmp_path):
    cfg = CurateConfig(captioners=[])
    curate(bunny, str(tmp_path), cfg, workers=0, progress=False)
    rows = read_jsonl(tmp_path / "manifest.jsonl") + read_jsonl(tmp_path / "rejects.jsonl")
    scored = [r for r in rows if "scores" in r]
    assert scored
    for r in scored:
        assert "text_coverage" not in r.get("failed", []), r
        assert "face_coverage" not in r.get("failed", []), r
