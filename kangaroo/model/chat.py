"""Prompts, generation and multi-round chat over a video.

Prompts come from the tokenizer's own chat template (Llama-3 headers for the official
model, ChatML for SmolLM2). Every piece of user- or history-supplied text is put into
the template as a random sentinel and tokenized on its own with
``split_special_tokens=True``, so a question containing ``<|eot_id|>`` or ``<eof>`` is
plain text: it can never produce a chat control token or a visual marker (the visual
markers are learned vectors outside the vocabulary anyway).

A ``Conversation`` encodes its video once. Each round re-renders the whole chat, finds
the longest prefix already in the KV cache, crops the cache there and feeds only the
rest, so later rounds skip both the vision tower and the video's prefill.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Iterator

import torch
from transformers import DynamicCache

from ..video import DecodeOptions, Frames, SamplingConfig, load_video
from ..video.preprocess import PreprocessConfig, preprocess_frames

STOP_TOKENS = ("<|eot_id|>", "<|end_of_text|>", "<|im_end|>", "<|endoftext|>")


@dataclass
class GenerationConfig:
    max_new_tokens: int = 512
    temperature: float = 0.6  # official defaults: temperature 0.6, top_p 0.9
    top_p: float = 0.9
    do_sample: bool = True
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("need temperature >= 0 and 0 < top_p <= 1")

    @classmethod
    def greedy(cls, max_new_tokens: int = 64) -> "GenerationConfig":
        return cls(max_new_tokens=max_new_tokens, do_sample=False)


class PromptBuilder:
    """messages -> token ids, with negative ids ``-(k+1)`` for the k-th visual row."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template")

    def build(self, messages: list[dict], n_visual: int, add_generation_prompt: bool = True) -> list[int]:
        tag = uuid.uuid4().hex
        video_mark = f"<<kgv-{tag}>>"
        pieces: dict[str, str] = {}
        rendered_msgs = []
        for i, m in enumerate(messages):
            key = f"<<kgt-{tag}-{i}>>"
            pieces[key] = m["content"]
            content = (video_mark + "\n" if m.get("video") else "") + key
            rendered_msgs.append({"role": m["role"], "content": content})
        text = self.tok.apply_chat_template(rendered_msgs, tokenize=False, add_generation_prompt=add_generation_prompt)
        ids: list[int] = []
        for part in re.split(f"({re.escape(video_mark)}|<<kgt-{tag}-\\d+>>)", text):
            if not part:
                continue
            if part == video_mark:
                ids.extend(-(k + 1) for k in range(n_visual))
            elif part in pieces:  # user or history text: never special
                ids.extend(self.tok.encode(pieces[part], add_special_tokens=False, split_special_tokens=True))
            else:  # the template's own text: its control tokens are meant
                ids.extend(self.tok.encode(part, add_special_tokens=False))
        return ids


def stop_ids(tokenizer, config) -> set[int]:
    ids = set()
    eos = getattr(config.text_config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in STOP_TOKENS if t in vocab)
    return ids


def sample_next(logits: torch.Tensor, gen: GenerationConfig, generator: torch.Generator | None) -> int:
    if not gen.do_sample or gen.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / gen.temperature, dim=-1)
    if gen.top_p < 1.0:
        sp, si = probs.sort(descending=True)
        keep = sp.cumsum(0) - sp < gen.top_p
        probs = torch.zeros_like(probs).scatter_(0, si[keep], sp[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


@dataclass
class Conversation:
    """A chat about one video: its visual rows (encoded once), messages, and the KV cache."""

    visual: torch.Tensor | None
    frames: dict = field(default_factory=dict)  # which frames were used (timestamps, size)
    messages: list[dict] = field(default_factory=list)
    cache: DynamicCache | None = None
    cached_ids: list[int] = field(default_factory=list)
    stats: list[dict] = field(default_factory=list)  # per round: prompt tokens, reused tokens

    def history(self) -> list[dict]:
        return [{"role": m["role"], "content": m["content"]} for m in self.messages]


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class KangarooChat:
    """Model + tokenizer + video settings: ``chat(video, question, history)``."""

    def __init__(self, model, tokenizer, preprocess: PreprocessConfig | None = None,
                 sampling: SamplingConfig | None = None, system_prompt: str | None = None):
        self.model = model.eval()
        self.tok = tokenizer
        size = model.config.vision.image_size
        self.preprocess = preprocess or PreprocessConfig(size=size, patch=model.config.vision.patch_size)
        self.sampling = sampling or SamplingConfig(num_frames=16)
        self.system_prompt = system_prompt
        self.builder = PromptBuilder(tokenizer)
        self.stops = stop_ids(tokenizer, model.config)

    @classmethod
    def load(cls, name_or_dir: str, device: str = "cpu", dtype: torch.dtype | None = None, **kw) -> "KangarooChat":
        from .weights import load_model

        model, tok = load_model(name_or_dir, device=device, dtype=dtype)
        return cls(model, tok, **kw)

    @property
    def device(self):
        return next(self.model.parameters()).device

    # ---- video ---------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, video: str | Frames, sampling: SamplingConfig | None = None) -> tuple[torch.Tensor, dict]:
        frames = video if isinstance(video, Frames) else load_video(
            video, sampling or self.sampling, DecodeOptions(max_side=max(self.preprocess.size * 2, 448)))
        pixels = preprocess_frames(frames.frames, self.preprocess).to(self.device)
        ts = torch.as_tensor(frames.timestamps, dtype=torch.float32, device=self.device)
        rows = self.model.visual_rows([(pixels, ts)])
        info = {"num_frames": len(frames), "timestamps": [round(float(t), 3) for t in frames.timestamps],
                "visual_tokens": int(rows.shape[0])}
        return rows, info

    def start(self, video: str | Frames | None, sampling: SamplingConfig | None = None) -> Conversation:
        if video is None:
            return Conversation(visual=None)
        rows, info = self.encode(video, sampling)
        return Conversation(visual=rows, frames=info)

    # ---- chat ----------------------------------------------------------------------------
    def ask_stream(self, conv: Conversation, question: str, gen: GenerationConfig | None = None,
                   on_token=None) -> Iterator[str]:
        """Stream the answer's text; the conversation is updated when the stream ends.
        ``on_token(id)`` is called for every generated token, text or not (for timing)."""
        gen = gen or GenerationConfig()
        if not conv.messages and self.system_prompt:
            conv.messages.append({"role": "system", "content": self.system_prompt})
        first_user = not any(m["role"] == "user" for m in conv.messages)
        conv.messages.append({"role": "user", "content": question, "video": first_user and conv.visual is not None})
        out_ids: list[int] = []
        shown = ""
        for tok in self._generate(conv, gen):
            if on_token is not None:
                on_token(tok)
            out_ids.append(tok)
            text = self.tok.decode(out_ids, skip_special_tokens=True)
            if text.endswith("\ufffd"):
                continue  # half a UTF-8 character: wait for the rest
            if len(text) > len(shown):
                yield text[len(shown):]
                shown = text
        answer = self.tok.decode(out_ids, skip_special_tokens=True).strip()
        conv.messages.append({"role": "assistant", "content": answer})

    def ask(self, conv: Conversation, question: str, gen: GenerationConfig | None = None) -> str:
        for _ in self.ask_stream(conv, question, gen):
            pass
        return conv.messages[-1]["content"]

    def chat(self, video, question: str, history: Conversation | None = None,
             gen: GenerationConfig | None = None) -> tuple[str, Conversation]:
        """One round: encodes ``video`` only when there is no history yet."""
        conv = history if history is not None else self.start(video)
        return self.ask(conv, question, gen), conv

    @torch.inference_mode()
    def ask_batch(self, visual: torch.Tensor | None, questions: list[str], gen: GenerationConfig | None = None) -> list[str]:
        """Answer several single-round questions about one video in one batch (greedy or sampled).

        Prompts are left-padded; a 2-D attention mask and per-row position ids keep padding
        out of every row's computation, so each answer equals the one ``ask`` would give."""
        gen = gen or GenerationConfig()
        if not questions:
            return []
        n_vis = 0 if visual is None else visual.shape[0]
        sys_msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        prompts = [self.builder.build(sys_msgs + [{"role": "user", "content": q, "video": visual is not None}], n_vis)
                   for q in questions]
        B, L = len(prompts), max(len(p) for p in prompts)
        dev = self.device
        ids = torch.zeros(B, L, dtype=torch.long, device=dev)
        mask = torch.zeros(B, L, dtype=torch.long, device=dev)
        for i, p in enumerate(prompts):
            ids[i, L - len(p):] = torch.tensor(p, device=dev)
            mask[i, L - len(p):] = 1
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config.text_config)
        generator = torch.Generator().manual_seed(gen.seed) if gen.seed is not None else None
        out = self.model(ids, visual=visual, attention_mask=mask, position_ids=pos, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
        done = [False] * B
        answers: list[list[int]] = [[] for _ in range(B)]
        last_pos = pos[:, -1]
        for _ in range(gen.max_new_tokens):
            nxt = []
            for i in range(B):
                tok = sample_next(out["logits"][i, -1], gen, generator) if not done[i] else 0
                if not done[i]:
                    if tok in self.stops:
                        done[i] = True
                    else:
                        answers[i].append(tok)
                nxt.append(tok)
            if all(done):
                break
            mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=dev)], dim=1)
            last_pos = last_pos + 1
            out = self.model(torch.tensor(nxt, device=dev)[:, None], attention_mask=mask, position_ids=last_pos[:, None],
                             past_key_values=cache, use_cache=True, logits_to_keep=1)
        return [self.tok.decode(a, skip_special_tokens=True).strip() for a in answers]

    def score_options(self, visual: torch.Tensor | None, question: str, options: list[str]) -> list[float]:
        """Log-likelihood of each option as the whole assistant reply (its end-of-turn token
        included) to ``question`` about the video: multiple choice scored the way lm-eval's and
        lmms-eval's ``multiple_choice`` tasks do, without asking the model to name a letter."""
        return self.score_options_many(visual, [question], [options])[0]

    def render_replies(self, visual: torch.Tensor | None, question: str, options: list[str]) -> tuple[list[int], list[list[int]]]:
        """(prompt ids, [reply ids per option]): each option as the assistant reply the chat
        template renders after the prompt, up to and including its end-of-turn token."""
        n_vis = 0 if visual is None else visual.shape[0]
        sys_msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        user = [{"role": "user", "content": question, "video": visual is not None}]
        prompt = self.builder.build(sys_msgs + user, n_vis, add_generation_prompt=True)
        conts = []
        for o in options:
            full = self.builder.build(sys_msgs + user + [{"role": "assistant", "content": o}], n_vis,
                                      add_generation_prompt=False)
            if full[: len(prompt)] != prompt:
                raise ValueError("the chat template does not render the reply after the prompt")
            cont = full[len(prompt):]
            while len(cont) > 1 and cont[-1] not in self.stops:  # drop what follows the end-of-turn token
                cont = cont[:-1]
            conts.append(cont)
        return prompt, conts

    def score_options_many(self, visual: torch.Tensor | None, questions: list[str],
                           options: list[list[str]]) -> list[list[float]]:
        """``score_options`` for several questions about one video (see ``option_loglikelihoods``)."""
        return [[lp for lp, _ in q] for q in self.option_loglikelihoods(visual, questions, options)]

    @torch.inference_mode()
    def option_loglikelihoods(self, visual: torch.Tensor | None, questions: list[str],
                              options: list[list[str]]) -> list[list[tuple[float, bool]]]:
        """(log-likelihood, is_greedy) of each option as the reply to its question about one video.

        The prompt part all questions share (system prompt, the video's rows) is prefilled once
        into a KV cache; each question's options then run as one right-padded batch over that
        cache, which is cropped back to the shared part afterwards. The video is computed once,
        not once per option and question (for an 8B model on a 20k-token video, that is the
        whole cost). ``is_greedy``: greedy decoding would produce exactly this reply."""
        if len(questions) != len(options):
            raise ValueError("one list of options per question")
        rendered = [self.render_replies(visual, q, opts) for q, opts in zip(questions, options)]
        if not rendered:
            return []
        # shared prefix, ending before every prompt's last token (whose logits score the first reply token)
        P = min(len(p) for p, _ in rendered) - 1
        for p, _ in rendered[1:]:
            P = min(P, common_prefix(rendered[0][0], p))
        dev = self.device
        cache = DynamicCache(config=self.model.config.text_config)
        if P > 0:
            self.model(torch.tensor([rendered[0][0][:P]], device=dev), visual=visual,
                       position_ids=torch.arange(P, device=dev)[None], past_key_values=cache, use_cache=True,
                       logits_to_keep=1)
        results = []
        for prompt, conts in rendered:
            if not conts:
                results.append([])
                continue
            rows = [prompt[P:] + c for c in conts]
            B, S = len(rows), max(len(r) for r in rows)
            ids = torch.zeros(B, S, dtype=torch.long, device=dev)
            mask = torch.ones(B, P + S, dtype=torch.long, device=dev)
            for i, r in enumerate(rows):  # right-padded: causal attention keeps the pads out of real tokens
                ids[i, : len(r)] = torch.tensor(r, device=dev)
                mask[i, P + len(r):] = 0
            pos = torch.arange(P, P + S, device=dev)[None].expand(B, S)
            if P > 0:
                cache.batch_repeat_interleave(B)
            vis = visual if bool((ids < 0).any()) else None
            out = self.model(ids, visual=vis, attention_mask=mask, position_ids=pos,
                             past_key_values=cache if P > 0 else None, use_cache=P > 0)
            logp = torch.log_softmax(out["logits"].float(), dim=-1)  # [B, S, V]
            start = len(prompt) - P  # row position of the first reply token
            scores = []
            for i, c in enumerate(conts):
                lp = logp[i, start - 1: start - 1 + len(c)]
                target = torch.tensor(c, device=dev)
                scores.append((float(lp.gather(-1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all())))
            results.append(scores)
            if P > 0:  # back to the shared prefix, one row
                cache.crop(P - cache.get_seq_length())  # transformers 5: a negative count to drop
                cache.batch_select_indices(torch.tensor([0], device=dev))
        return results

    @torch.inference_mode()
    def _generate(self, conv: Conversation, gen: GenerationConfig) -> Iterator[int]:
        n_vis = 0 if conv.visual is None else conv.visual.shape[0]
        ids = self.builder.build(conv.messages, n_vis, add_generation_prompt=True)
        reuse = min(common_prefix(conv.cached_ids, ids), len(ids) - 1) if conv.cache is not None else 0
        if reuse == 0:
            conv.cache = DynamicCache(config=self.model.config.text_config)
        else:
            conv.cache.crop(reuse - conv.cache.get_seq_length())  # transformers 5: a negative count to drop
        conv.stats.append({"prompt_tokens": len(ids), "reused_tokens": reuse})
        generator = torch.Generator().manual_seed(gen.seed) if gen.seed is not None else None
        dev = self.device
        new = torch.tensor([ids[reuse:]], device=dev)
        pos = torch.arange(reuse, len(ids), device=dev)[None]
        out = self.model(new, visual=conv.visual, position_ids=pos, past_key_values=conv.cache, use_cache=True,
                         logits_to_keep=1)
        fed = list(ids)
        for _ in range(gen.max_new_tokens):
            tok = sample_next(out["logits"][0, -1], gen, generator)
            if tok in self.stops:
                break
            yield tok
            out = self.model(torch.tensor([[tok]], device=dev), position_ids=torch.tensor([[len(fed)]], device=dev),
                             past_key_values=conv.cache, use_cache=True, logits_to_keep=1)
            fed.append(tok)
        conv.cached_ids = fed

