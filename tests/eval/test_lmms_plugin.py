import pytest
from types import SimpleNamespace

from kangaroo.eval.lmms_plugin import KangarooLMMsCore
from kangaroo.model.chat import KangarooChat


def test_generate_until_follows_lmms_eval_requests(tiny_chat_model, smol_tokenizer, synth_video):
    core = KangarooLMMsCore(chat=KangarooChat(tiny_chat_model, smol_tokenizer), max_frames_num=4)
    core.task_dict = {"mvbench": {"test": {0: {"video": synth_video}, 1: {"video": synth_video}}}}
    to_visual = lambda doc: [doc["video"]]  # noqa: E731  (lmms-eval's doc_to_visual)
    reqs = [SimpleNamespace(args=(f"Question {i}\n(A) x\n(B) y", {"max_new_tokens": 4, "until": ["\n\n"]}, to_visual, i,
                                  "mvbench", "test")) for i in range(2)]
    out = core.generate_until(reqs)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)
    assert len(core._encoded) == 1  # the same video was encoded once


def test_loglikelihood_follows_lmms_eval_multiple_choice(tiny_chat_model, smol_tokenizer, synth_video):
    """multiple_choice requests (one per option, lmms-eval's ' ' target delimiter): one
    (log-likelihood, is_greedy) pair each, equal to scoring that option alone; the video is
    encoded once for all of them."""
    kc = KangarooChat(tiny_chat_model, smol_tokenizer)
    core = KangarooLMMsCore(chat=kc, max_frames_num=4)
    core.task_dict = {"t": {"test": {0: {"video": synth_video}, 1: {"video": synth_video}, 2: {"text": "no video"}}}}
    to_visual = lambda doc: [doc["video"]] if "video" in doc else []  # noqa: E731
    opts = {0: ["a red circle", "a blue square"], 1: ["yes", "no", "maybe"], 2: ["left", "right"]}
    ctx = {0: "What is shown first?", 1: "Is anything moving?", 2: "Which way?"}
    reqs = [SimpleNamespace(args=(ctx[d], " " + o, to_visual, d, "t", "test")) for d in (1, 0, 2) for o in opts[d]]
    out = core.loglikelihood(reqs)
    assert len(out) == 7 and all(isinstance(lp, float) and isinstance(g, bool) for lp, g in out)
    assert len(core._encoded) == 1
    rows = core._visual(synth_video)[0]
    for req, (lp, _) in zip(reqs, out):
        d = req.args[3]
        alone = kc.score_options(rows if d != 2 else None, ctx[d], [req.args[1].strip()])[0]
        assert lp == pytest.approx(alone, abs=2e-3)


def test_generate_until_answers_as_kangaroo_eval_does(tiny_chat_model, smol_tokenizer, synth_dir):
    """Greedy requests about two videos, interleaved as lmms-eval may order them: each video is
    encoded once, and every reply, in request order, is the evaluation core's answer to that
    prompt (kangaroo eval's path); lmms-eval's stop strings cut the reply."""
    from kangaroo.eval import core as eval_core
    from kangaroo.video import SamplingConfig

    kc = KangarooChat(tiny_chat_model, smol_tokenizer)
    encoded = []
    encode = kc.encode
    kc.encode = lambda video, sampling: encoded.append(video) or encode(video, sampling)
    core = KangarooLMMsCore(chat=kc, max_frames_num=4, decode_batch_size=2)
    videos = [str(synth_dir / "videos" / f"synth_11_0000{i}.mp4") for i in (0, 1)]
    docs = {d: {"video": videos[d % 2]} for d in range(5)}
    core.task_dict = {"t": {"test": docs}}
    prompts = {d: f"Question {d}\n(A) x\n(B) y\nAnswer with the option's letter." for d in docs}
    reqs = [SimpleNamespace(args=(prompts[d], {"max_new_tokens": 5, "until": ["\n\n"] if d == 4 else []},
                                  lambda doc: [doc["video"]], d, "t", "test")) for d in docs]
    out = core.generate_until(reqs)
    assert sorted(encoded) == sorted(videos)  # once each, though the requests alternate
    for d, text in zip(docs, out):
        rows = encode(videos[d % 2], SamplingConfig(num_frames=4))[0]
        alone = eval_core.generate_answers(kc, rows, [prompts[d]], 5)[0]
        assert text == (alone.split("\n\n")[0] if d == 4 else alone)


def test_backend_arguments_are_checked(tiny_chat_model, smol_tokenizer):
    kc = KangarooChat(tiny_chat_model, smol_tokenizer)
    with pytest.raises(ValueError, match="decode_batch_size"):
        KangarooLMMsCore(chat=kc, decode_batch_size=0)
    core = KangarooLMMsCore(chat=kc, max_frames_num="8", batch_size="1", max_batch_size=None)  # lmms-eval's extras
    assert core.frames == 8
