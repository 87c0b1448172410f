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
