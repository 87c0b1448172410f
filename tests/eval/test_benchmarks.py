"""Each adapter reads a small fixture written in its benchmark's released format (videos made by
kangaroo synth), and the harness runs, resumes and reports on it."""

import csv
import dataclasses
import json
import os
import shutil

import pytest

from kangaroo.eval.benchmarks import BENCHMARKS, srt_text
from kangaroo.eval.harness import EvalConfig, predict, report, run_eval
from kangaroo.model.chat import KangarooChat


def put(video, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy(video, dst)


def wj(path, obj, jsonl=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        if jsonl:
            f.write("\n".join(json.dumps(o) for o in obj) + "\n")
        else:
            json.dump(obj, f)


def make_fixture(name, root, video):
    r = str(root)
    if name == "mvbench":
        wj(f"{r}/json/action_sequence.json", [{"video": "a.mp4", "question": "What did the person do first?",
                                               "candidates": ["Sat down.", "Opened the door."], "answer": "Opened the door.",
                                               "start": 1.0, "end": 6.0}])
        wj(f"{r}/json/action_antonym.json", [{"video": "b.webm", "question": "What is happening?",
                                              "candidates": ["pulling", "pushing", "not sure"], "answer": "pushing"}])
        put(video, f"{r}/video/star/Charades_v1_480/a.mp4")
        put(video, f"{r}/video/ssv2_video/b.webm")
        return 2, {"action_sequence", "action_antonym"}
    if name == "egoschema":
        q = {"q_uid": "u1", "google_drive_id": "x", "question": "What is C doing?",
             **{f"option {k}": f"option text {k}" for k in range(5)}}
        wj(f"{r}/questions.json", [q, {**q, "q_uid": "u2"}])
        wj(f"{r}/subset_answers.json", {"u1": 3})
        put(video, f"{r}/videos/u1.mp4")
        return 1, {"egoschema"}
    if name in ("videomme", "videomme_sub"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [{"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity",
                 "url": "https://example", "videoID": "fFjv93ACGo8", "question_id": "001-1", "task_type": "Counting Problem",
                 "question": "How many shapes appear?", "options": ["A. 1.", "B. 2.", "C. 3.", "D. 4."], "answer": "C"}]
        os.makedirs(f"{r}/videomme", exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), f"{r}/videomme/test-00000-of-00001.parquet")
        put(video, f"{r}/videos/fFjv93ACGo8.mp4")
        os.makedirs(f"{r}/subtitle", exist_ok=True)
        with open(f"{r}/subtitle/fFjv93ACGo8.srt", "w") as f:
            f.write("1\n00:00:01,000 --> 00:00:02,000\n<i>Hello there</i>\n\n2\n00:00:03,000 --> 00:00:04,000\nA red circle\n")
        return 1, {"short/Counting Problem"}
    if name == "mlvu":
        wj(f"{r}/json/1_plotQA.json", [{"video": "v.mp4", "duration": 12.0, "question": "What color?",
                                        "candidates": ["red", "blue"], "answer": "blue", "question_type": "plotQA"}])
        put(video, f"{r}/video/1_plotQA/v.mp4")
        return 1, {"plotQA"}
    if name == "longvideobench":
        wj(f"{r}/lvb_val.json", [{"id": "q1", "video_id": "v1", "video_path": "v1.mp4", "duration": 12.0,
                                  "question": "Which object?", "candidates": ["circle", "square", "star"],
                                  "correct_choice": 1, "question_category": "TOS", "duration_group": 15}])
        put(video, f"{r}/videos/v1.mp4")
        return 1, {"TOS"}
    if name == "tempcompass":
        wj(f"{r}/questions/multi-choice.json", {"1025": {"speed": [
            {"question": "What is the speed of the shape?\nA. slow\nB. normal\nC. fast", "answer": "C. fast"}],
            "direction": [{"question": "Where does it move?\nA. left\nB. right", "answer": "A. left"}]}})
        put(video, f"{r}/videos/1025.mp4")
        return 2, {"speed", "direction"}
    if name == "lvbench":
        wj(f"{r}/video_info.meta.jsonl", [{"key": "k1", "type": "cartoon", "qa": [
            {"uid": 7, "question": "What happens at the end?\n(A) a cut\n(B) a flash\n(C) nothing\n(D) a fade",
             "answer": "B", "question_type": ["key information retrieval"], "time_reference": "00:10"}]}], jsonl=True)
        put(video, f"{r}/videos/k1.mp4")
        return 1, {"key information retrieval"}
    if name == "mmbench_video":
        os.makedirs(r, exist_ok=True)
        with open(f"{r}/MMBench-Video.tsv", "w", newline="") as f:
            w = csv.writer(f, delimiter="\t")
            w.writerow(["index", "video", "video_type", "question", "answer", "question_id", "dimensions"])
            w.writerow([0, "abc", "sports", "What happens?", "Shapes move.", "abc_0", "['CP']"])
        put(video, f"{r}/video/abc.mp4")
        return 1, {"['CP']"}
    raise KeyError(name)


ADAPTERS = ["mvbench", "egoschema", "videomme", "videomme_sub", "mlvu", "longvideobench", "tempcompass", "lvbench",
            "mmbench_video"]


@pytest.mark.parametrize("name", ADAPTERS)
def test_adapter_reads_fixture_and_runs(name, tmp_path, synth_video, tiny_chat_model, smol_tokenizer):
    n, tasks = make_fixture(name, tmp_path / "data", synth_video)
    items = BENCHMARKS.get(name)(str(tmp_path / "data"))
    assert len(items) == n and {it.task for it in items} == tasks
    for it in items:
        assert os.path.exists(it.video)
        if it.candidates:
            assert 0 <= it.answer < len(it.candidates)
    kc = KangarooChat(tiny_chat_model, smol_tokenizer)
    res = run_eval(kc, EvalConfig(name, str(tmp_path / "data"), str(tmp_path / "out"), frames=4), "tiny", progress=False)
    assert res["n"] == n and res["settings"]["frames"] == 4 and "prompt_template" in res["settings"]
    if name == "mmbench_video":
        assert res["accuracy"] is None and "judge" in res["note"]
    else:
        assert 0.0 <= res["accuracy"] <= 1.0
    assert (tmp_path / "out" / "results.md").exists()
    assert (tmp_path / "out" / "per_task.png").exists() == (name != "mmbench_video")  # unscored without a judge


def test_specific_fields(tmp_path, synth_video):
    make_fixture("mvbench", tmp_path / "m", synth_video)
    seq = [it for it in BENCHMARKS.get("mvbench")(str(tmp_path / "m")) if it.task == "action_sequence"][0]
    assert (seq.start, seq.end, seq.answer) == (1.0, 6.0, 1)
    make_fixture("videomme_sub", tmp_path / "v", synth_video)
    it = BENCHMARKS.get("videomme_sub")(str(tmp_path / "v"))[0]
    assert it.candidates == ["1.", "2.", "3.", "4."] and it.answer == 2 and it.subtitles == "Hello there\nA red circle"
    assert BENCHMARKS.get("videomme")(str(tmp_path / "v"))[0].subtitles is None
    make_fixture("tempcompass", tmp_path / "t", synth_video)
    speed = [x for x in BENCHMARKS.get("tempcompass")(str(tmp_path / "t")) if x.task == "speed"][0]
    assert speed.candidates == ["slow", "normal", "fast"] and speed.answer == 2
    with pytest.raises(FileNotFoundError):
        BENCHMARKS.get("egoschema")(str(tmp_path / "nothing"))


def test_interrupted_run_resumes(tmp_path, synth_dir, tiny_chat_model, smol_tokenizer):
    kc = KangarooChat(tiny_chat_model, smol_tokenizer)
    cfg = EvalConfig("synthetic", str(synth_dir), str(tmp_path), frames=4, limit=6)
    predict(kc, EvalConfig("synthetic", str(synth_dir), str(tmp_path), frames=4, limit=3), progress=False)
    path = tmp_path / "predictions.rank0.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines) + "\n" + lines[-1][: len(lines[-1]) // 2])  # a line cut by a crash
    assert predict(kc, cfg, progress=False) == 3  # only the three not yet answered
    res = report(kc, cfg, "tiny")
    assert res["n"] == 6 and len({json.loads(x)["qid"] for x in path.read_text().splitlines()}) == 6


def test_shards_cover_everything_once(tmp_path, synth_dir, tiny_chat_model, smol_tokenizer):
    kc = KangarooChat(tiny_chat_model, smol_tokenizer)
    for rank in (0, 1):
        predict(kc, EvalConfig("synthetic", str(synth_dir), str(tmp_path), frames=2, limit=5, rank=rank, world=2),
                progress=False)
    res = report(kc, EvalConfig("synthetic", str(synth_dir), str(tmp_path), frames=2, limit=5), "tiny")
    assert res["n"] == 5


def test_srt(tmp_path):
    p = tmp_path / "a.srt"
    p.write_text("1\n00:00:00,000 --> 00:00:01,000\nfirst line\n\n2\n00:00:01,000 --> 00:00:02,000\n<b>second</b>\n")
    assert srt_text(str(p)) == "first line\nsecond"


def test_batch_size_does_not_change_answers(tmp_path, synth_dir, tiny_chat_model, smol_tokenizer):
    kc = KangarooChat(tiny_chat_model, smol_tokenizer)
    outs = []
    for bs in (1, 8):
        out = tmp_path / f"bs{bs}"
        predict(kc, EvalConfig("synthetic", str(synth_dir), str(out), frames=4, limit=8, batch_size=bs), progress=False)
        outs.append([json.loads(x)["output"] for x in (out / "predictions.rank0.jsonl").read_text().splitlines()])
    assert outs[0] == outs[1]


def test_missing_video_is_an_error_row(tmp_path, synth_video, tiny_chat_model, smol_tokenizer):
    make_fixture("longvideobench", tmp_path / "d", synth_video)
    os.remove(tmp_path / "d" / "videos" / "v1.mp4")
    res = run_eval(KangarooChat(tiny_chat_model, smol_tokenizer),
                   EvalConfig("longvideobench", str(tmp_path / "d"), str(tmp_path / "o"), frames=2), "tiny", progress=False)
    assert res["n"] == 1 and res["errors"] == 1 and res["accuracy"] == 0.0


def test_prompt_templates_per_benchmark(tmp_path, synth_video):
    from kangaroo.eval.harness import prompt_for

    make_fixture("videomme_sub", tmp_path / "v", synth_video)
    it = BENCHMARKS.get("videomme_sub")(str(tmp_path / "v"))[0]
    p = prompt_for(it, "videomme_sub")
    assert p.startswith("This video's subtitles") and "The best answer is:" in p and "(C) 3." in p
    assert "Only give the best option." in prompt_for(it, "mvbench")
    assert prompt_for(it, "mlvu").endswith("Answer with the option's letter from the given choices directly.")


def test_likelihood_scoring_picks_the_likeliest_option(tmp_path, synth_dir, tiny_chat_model, smol_tokenizer):
    kc = KangarooChat(tiny_chat_model, smol_tokenizer)
    cfg = EvalConfig("synthetic", str(synth_dir), str(tmp_path / "o"), frames=4, limit=5, mc_scoring="likelihood")
    res = run_eval(kc, cfg, "tiny", progress=False)
    assert res["settings"]["mc_scoring"] == "likelihood" and res["n"] == 5 and res["unparsed"] == 0
    recs = [json.loads(x) for x in (tmp_path / "o" / "predictions.rank0.jsonl").read_text().splitlines()]
    for r in recs:
        assert r["pred"] == max(range(len(r["scores"])), key=r["scores"].__getitem__)
        assert r["correct"] == (r["pred"] == r["answer"])
    with pytest.raises(ValueError, match="mc_scoring"):
        EvalConfig("synthetic", "d", "o", mc_scoring="vibes")
    with pytest.raises(ValueError, match="sampler must be one of"):
        EvalConfig("synthetic", "d", "o", sampler="fps")  # it would ignore the frame count


def test_synthetic_groups_break_down_when_and_count(tmp_path, synth_dir, tiny_chat_model, smol_tokenizer):
    items = BENCHMARKS.get("synthetic")(str(synth_dir))
    mc = json.loads((synth_dir / "mcqa.json").read_text())
    dur = {t["video"]: t["config"]["duration"] for t in json.loads((synth_dir / "timelines.json").read_text())}
    for it, r in zip(items, mc):
        g = it.extra["group"]
        if r["family"] == "count":
            assert g == f"count={len(r['evidence'])}"
        elif r["family"] == "when":
            k = int(g[len("when@"):-len("/5")])
            assert (k - 1) / 5 <= r["answer_seconds"] / dur[r["video"]] < k / 5 + 1e-9
        elif r["family"] in ("appear_at", "order"):
            assert g is None
    assert any(it.extra["group"] for it in items)
    kc = KangarooChat(tiny_chat_model, smol_tokenizer)
    cfg = EvalConfig("synthetic", str(synth_dir), str(tmp_path), frames=2, mc_scoring="likelihood")
    predict(kc, cfg, progress=False)
    res = report(kc, cfg, "tiny")
    recs = [json.loads(x) for x in (tmp_path / "predictions.rank0.jsonl").read_text().splitlines()]
    grouped = [r for r in recs if r.get("group")]
    assert sum(v["n"] for v in res["per_group"].values()) == len(grouped) > 0
    for g, v in res["per_group"].items():
        rs = [r["correct"] for r in grouped if r["group"] == g]
        assert v["accuracy"] == round(sum(rs) / len(rs), 4)
    assert "| group | n | accuracy |" in (tmp_path / "results.md").read_text()


def test_evidence_window_takes_frames_from_the_ground_truth_interval(tmp_path, synth_dir, tiny_chat_model,
                                                                     smol_tokenizer):
    """--window evidence: each question's frames come from its own interval, all of them inside it."""
    seen = []

    class Spy(KangarooChat):
        def encode(self, video, sampling=None):
            rows, info = super().encode(video, sampling)
            seen.append((os.path.relpath(video, synth_dir), sampling.start, sampling.end, info["timestamps"]))
            return rows, info

    kc = Spy(tiny_chat_model, smol_tokenizer)
    cfg = EvalConfig("synthetic", str(synth_dir), str(tmp_path / "o"), frames=2, tasks=["appear_at", "needle"],
                     mc_scoring="likelihood", window="evidence")
    res = run_eval(kc, cfg, "tiny", progress=False)
    mc = [r for r in json.loads((synth_dir / "mcqa.json").read_text()) if r["family"] in ("appear_at", "needle")]
    assert res["n"] == len(mc) > 0 and res["settings"]["window"] == "evidence"
    assert sorted((v, a, b) for v, a, b, _ in seen) == sorted({(r["video"], *map(float, r["evidence"])) for r in mc})
    for _, a, b, ts in seen:
        assert len(ts) == 2 and all(a - 0.15 <= t <= b + 1e-6 for t in ts)  # a frame shown at t was decoded at or after t
    with pytest.raises(ValueError, match="ground-truth interval"):
        predict(kc, dataclasses.replace(cfg, tasks=["count"], out=str(tmp_path / "c")), progress=False)
    with pytest.raises(ValueError, match="window must be one of"):
        EvalConfig("synthetic", "d", "o", window="oracle")


def test_mvbench_frame_folder_task(tmp_path, synth_video, tiny_chat_model, smol_tokenizer):
    """episodic_reasoning ships each video as a folder of JPEG frames at 3 fps (tvqa/frames_fps3_hq)."""
    from tests.video.test_frames import write_frames

    r = tmp_path / "mv"
    wj(f"{r}/json/episodic_reasoning.json", [{"video": "castle_s07e04_seg02_clip_14", "question": "Why?",
                                              "candidates": ["a", "b", "c"], "answer": "b", "start": 2.0, "end": 6.0}])
    write_frames(synth_video, r / "video" / "tvqa" / "frames_fps3_hq" / "castle_s07e04_seg02_clip_14", seconds=8.0)
    (it,) = BENCHMARKS.get("mvbench")(str(r))
    assert os.path.isdir(it.video) and (it.start, it.end, it.answer) == (2.0, 6.0, 1)
    seen = []

    class Spy(KangarooChat):
        def encode(self, video, sampling=None):
            rows, info = super().encode(video, sampling)
            seen.append(info["timestamps"])
            return rows, info

    res = run_eval(Spy(tiny_chat_model, smol_tokenizer), EvalConfig("mvbench", str(r), str(tmp_path / "o"), frames=4),
                   "tiny", progress=False)
    (rec,) = [json.loads(x) for x in (tmp_path / "o" / "predictions.rank0.jsonl").read_text().splitlines()]
    assert "error" not in rec and res["n"] == 1
    (ts,) = seen
    assert len(ts) == 4 and all(2.0 - 1 / 3 <= t < 6.0 for t in ts)
    assert all(abs(t * 3 - round(t * 3)) < 1e-3 for t in ts)  # the frames' own times at 3 fps
