"""Kangaroo through vLLM offline, next to ``model.generate()`` on the same inputs (imports vLLM).

vLLM starts its engine in child processes: run this as a script (the engine is created under
``if __name__ == "__main__"``), e.g. from a test:

    python -m kangaroo.vllm_plugin.offline JOB.json OUT.json

JOB: {"model": DIR, "max_tokens": 12, "max_model_len": 4096,
      "requests": [{"video": PATH, "question": "...", "frames": 8}, ...]}
OUT: one entry per request: the greedy token ids and text from vLLM and from ``model.generate()``
(both float32), the prompt ids each engine saw, and vLLM's and ours log-probabilities of the
first generated token.
"""

from __future__ import annotations

import json
import os
import sys

# vLLM's CPU backend takes this much RAM for the KV cache (GiB); its default (4) is much more than
# a test needs on a small machine
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def engine(model: str, max_model_len: int = 4096, max_num_seqs: int = 32, **kw):
    """vLLM's ``LLM`` on a full Kangaroo folder in float32 (vLLM on CPU defaults to bf16)."""
    from vllm import LLM

    args = dict(model=model, dtype="float32", max_model_len=max_model_len, gpu_memory_utilization=0.15,
                limit_mm_per_prompt={"video": 1}, max_num_seqs=max_num_seqs, enforce_eager=True)
    args.update(kw)
    return LLM(**args)


def conversation(video: str, question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "video", "video": video}, {"type": "text", "text": question}]}]


def run(job: dict) -> list[dict]:
    import torch
    from vllm import SamplingParams

    from ..model.weights import load
    from .layout import kangaroo_prompt

    model, proc = load(job["model"])
    n_tok = int(job.get("max_tokens", 12))
    prompts, out = [], []
    for r in job["requests"]:
        conv = conversation(r["video"], r["question"])
        frames = proc.load_frames(r["video"], "video", proc.sampling(None, r["frames"]))
        inputs = proc.apply_chat_template(conv, num_frames=r["frames"])
        with torch.no_grad():
            gen = model.generate(**inputs, max_new_tokens=n_tok, do_sample=False, output_scores=True,
                                 return_dict_in_generate=True)
        ours = gen.sequences[0, inputs["input_ids"].shape[1]:].tolist()
        first = torch.log_softmax(gen.scores[0][0].float(), -1)
        ids, items = kangaroo_prompt(proc, conv, [frames])
        prompts.append({"prompt_token_ids": ids, "multi_modal_data": {"video": items}})
        out.append({"ours": ours, "ours_text": proc.decode(ours, skip_special_tokens=True),
                    "ours_prompt": inputs["input_ids"][0].tolist(), "ours_first_logprob": float(first[ours[0]])})
    llm = engine(job["model"], max_model_len=int(job.get("max_model_len", 4096)))
    params = SamplingParams(temperature=0.0, max_tokens=n_tok, logprobs=1)
    for o, res in zip(out, llm.generate(prompts, params)):
        c = res.outputs[0]
        o.update(vllm=list(c.token_ids), vllm_text=c.text, vllm_prompt=list(res.prompt_token_ids),
                 vllm_first_logprob=float(c.logprobs[0][c.token_ids[0]].logprob))
    return out


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        result = run(json.load(f))
    with open(sys.argv[2], "w") as f:
        json.dump(result, f)
