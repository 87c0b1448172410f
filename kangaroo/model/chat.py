"""Multi-round chat over a video: a thin wrapper over ``KangarooProcessor`` and ``model.generate``.

The processor turns media and text into tensors (kangaroo/model/processing.py), the prompts
come from ``kangaroo.prompts`` (user text can never produce control tokens or placeholders),
and every answer is ``model.generate`` (greedy, sampling, beam search, stopping criteria,
streamers all work). What this adds:

- A ``Conversation`` encodes its video once. Each round re-renders the whole chat, finds the
  longest prefix already in the KV cache, crops the cache there and lets ``generate`` feed
  only the rest, so later rounds skip both the vision tower and the video's prefill.
- A per-frame encoder cache (``FrameCache``), keyed by (video identity, timestamp, frame
  size): asking about the same video again at another frame count, another time range, or
  after the file has grown runs the vision tower only on frames it has not seen.
- Likelihood scoring of multiple-choice options over one shared prefill of the video.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Iterator

import torch
from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from ..compat import CACHE_ARG
from ..lru import LRUBytes
from ..video import Frames, SamplingConfig
from ..video.identity import video_identity
from .processing import KangarooProcessor

STOP_TOKENS = ("<|eot_id|>", "<|end_of_text|>", "<|im_end|>", "<|endoftext|>")
# A batch of questions shares its prompt's start (system prompt, the video's block) when it is at least
# this long: prefilled once instead of once per question (ask_batch, generate_ids).
SHARED_PREFIX_MIN = 8


@dataclass
class GenerationConfig:
    max_new_tokens: int = 512
    temperature: float = 0.6  # official defaults: temperature 0.6, top_p 0.9
    top_p: float = 0.9
    do_sample: bool = True
    seed: int | None = None
    # stop tokens are masked until this many tokens are written (vLLM's and OpenAI-compatible servers'
    # ``min_tokens``; transformers' ``min_new_tokens``); 0: off
    min_new_tokens: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"need 0 <= min_new_tokens <= max_new_tokens ({self.max_new_tokens}), "
                             f"got {self.min_new_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("need temperature >= 0 and 0 < top_p <= 1")

    @classmethod
    def greedy(cls, max_new_tokens: int = 64) -> "GenerationConfig":
        return cls(max_new_tokens=max_new_tokens, do_sample=False)

    @property
    def sampling(self) -> bool:
        return self.do_sample and self.temperature > 0

    def generate_kwargs(self) -> dict:
        """The same settings as ``model.generate`` keyword arguments."""
        kw = {"min_new_tokens": self.min_new_tokens} if self.min_new_tokens else {}
        if not self.sampling:
            return {"max_new_tokens": self.max_new_tokens, "do_sample": False, **kw}
        return {"max_new_tokens": self.max_new_tokens, "do_sample": True, "temperature": self.temperature,
                "top_p": self.top_p, "top_k": 0, **kw}


def stop_ids(tokenizer, config) -> set[int]:
    ids = set()
    eos = getattr(config.text_config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in STOP_TOKENS if t in vocab)
    return ids


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


class FrameCache(LRUBytes):
    """The vision tower's output per frame, keyed by (video identity, timestamp, frame size), LRU
    within a byte budget. ``stats`` counts frames encoded and frames served from the cache."""

    def __init__(self, budget_mb: float = 512):
        super().__init__(int(budget_mb * 1024 * 1024))
        self.stats = {"encoded": 0, "reused": 0}

    def put(self, key, value: torch.Tensor) -> None:
        super().put(key, value, value.nbytes)


class _Stop(StoppingCriteria):
    """Stops ``generate`` as soon as ``event`` is set (a reader that went away)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _QueueStreamer(BaseStreamer):
    """Hands each generated token id to a queue (the first ``put`` is the prompt: skipped)."""

    def __init__(self, q: queue.Queue):
        self.q, self.prompt_seen = q, False

    def put(self, value):
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for t in value.reshape(-1).tolist():
            self.q.put(("token", t))

    def end(self):
        pass


class ContextLengthError(ValueError):
    """A prompt (with the answer's token budget) that cannot fit the LLM's context."""


class IncrementalDetokenizer:
    """Text deltas from a growing list of token ids, decoding only a short window each time
    (the offsets scheme of vLLM's detokenizer): never the whole answer per token."""

    def __init__(self, tokenizer):
        self.tok, self.ids, self.prefix, self.read = tokenizer, [], 0, 0

    def push(self, token: int) -> str:
        self.ids.append(token)
        before = self.tok.decode(self.ids[self.prefix: self.read], skip_special_tokens=True)
        now = self.tok.decode(self.ids[self.prefix:], skip_special_tokens=True)
        if len(now) > len(before) and not now.endswith("\ufffd"):  # not half a UTF-8 character
            self.prefix, self.read = self.read, len(self.ids)
            return now[len(before):]
        return ""


class KangarooChat:
    """Model + processor + video settings: ``chat(video, question, history)``."""

    def __init__(self, model, tokenizer, preprocess=None, sampling: SamplingConfig | None = None,
                 system_prompt: str | None = None, encoder_cache_mb: float = 512):
        self.model = model.eval()
        self.processor = tokenizer if isinstance(tokenizer, KangarooProcessor) else \
            KangarooProcessor.from_config(model.config, tokenizer)
        self.processor.sync(model.config)
        if preprocess is not None:
            self.processor.image_size, self.processor.resize = preprocess.size, preprocess.mode
        self.tok = self.processor.tokenizer
        self.renderer = self.processor.renderer
        self.sampling = sampling or SamplingConfig(num_frames=16)
        self.system_prompt = system_prompt
        self.stops = stop_ids(self.tok, model.config)
        self.model.generation_config.eos_token_id = sorted(self.stops)
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else min(self.stops)
        self.model.generation_config.pad_token_id = self.pad_id
        self.frame_cache = FrameCache(encoder_cache_mb)

    @classmethod
    def load(cls, name_or_dir: str, device: str = "cpu", dtype: torch.dtype | None = None,
             quantize: str | None = None, **kw) -> "KangarooChat":
        """``quantize``: "int8" / "int4" weight-only quantisation of the LLM (quantize.py; torchao)."""
        from .weights import load

        if quantize is not None:
            from .quantize import quantize_config

            quantize_config(quantize, device)  # torchao missing or an unknown mode: said before loading
        model, processor = load(name_or_dir, device=device, dtype=dtype)
        if quantize is not None:
            from .quantize import quantize_llm

            model.quantization = quantize_llm(model, quantize)
        return cls(model, processor, **kw)

    @property
    def context_length(self) -> int:
        """Tokens the LLM attends over (its config's max_position_embeddings)."""
        return int(getattr(self.model.config.text_config, "max_position_embeddings", None) or 2**31)

    def check_fits(self, prompt_tokens: int, max_new_tokens: int) -> None:
        """ContextLengthError unless a prompt of this length and its answer's budget fit the context."""
        if prompt_tokens + max_new_tokens > self.context_length:
            raise ContextLengthError(f"the prompt is {prompt_tokens} tokens (video included) and the answer may take "
                                     f"{max_new_tokens} more: over the model's context of {self.context_length} "
                                     "tokens; use fewer frames, a shorter text or a smaller max_tokens")

    @property
    def preprocess(self):
        return self.processor.preprocess

    @property
    def device(self):
        return next(self.model.parameters()).device

    # ---- video ---------------------------------------------------------------------------
    def _features(self, frames: Frames, pixels: torch.Tensor) -> torch.Tensor:
        """The tower's features of every frame, from the frame cache where it has them."""
        path = getattr(frames.info, "path", None) if frames.info is not None else None
        ident = video_identity(path) if path else None
        if ident is None:
            self.frame_cache.stats["encoded"] += len(frames)
            return self.model.tower_features(pixels)
        size = tuple(pixels.shape[2:])
        keys = [(ident, round(float(t), 4), size) for t in frames.timestamps]
        have = {k: self.frame_cache.get(k) for k in keys}
        todo = [k for k, h in have.items() if h is None]  # each distinct frame once
        if todo:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            new = self.model.tower_features(pixels[[first[k] for k in todo]])
            for k, f in zip(todo, new):
                have[k] = f
                self.frame_cache.put(k, f)
        self.frame_cache.stats["encoded"] += len(todo)
        self.frame_cache.stats["reused"] += len(keys) - len(todo)
        have = [have[k] for k in keys]
        return torch.stack(have)

    @torch.inference_mode()
    def encode(self, video: str | Frames, sampling: SamplingConfig | None = None) -> tuple[torch.Tensor, dict]:
        """(visual rows [N, d] of the video's block, info): decoded, preprocessed and encoded once."""
        frames = self.processor.load_frames(video, "video", sampling or self.sampling)
        self.processor.sync(self.model.config)  # the model's layout may have been switched (eval --frames-per-slot)
        pixels, ts, n = self.processor.features(frames)
        pixels, ts = pixels.to(self.device), ts.to(self.device)
        feats = self._features(frames, pixels)
        rows = self.model.video_block(self.model.encode_video(pixels, ts, features=feats), ts)
        if rows.shape[0] != n:
            raise RuntimeError(f"the processor counts {n} positions for this video, the model made {rows.shape[0]}")
        info = {"num_frames": len(frames), "timestamps": [round(float(t), 3) for t in frames.timestamps],
                "visual_tokens": int(rows.shape[0])}
        return rows, info

    def start(self, video: str | Frames | None, sampling: SamplingConfig | None = None) -> Conversation:
        if video is None:
            return Conversation(visual=None)
        rows, info = self.encode(video, sampling)
        return Conversation(visual=rows, frames=info)

    # ---- prompts ---------------------------------------------------------------------------
    def _system(self) -> list[dict]:
        return [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []

    def render(self, messages: list[dict], visual: torch.Tensor | None, add_generation_prompt: bool = True) -> list[int]:
        return self.renderer.render(messages, [visual.shape[0]] if visual is not None else [], add_generation_prompt)

    def _shared_prefix(self, rows: list[list[int]], visual: torch.Tensor | None) -> tuple[int, DynamicCache | None]:
        """(P, cache): the first P tokens every row has (the system prompt and the video's block),
        prefilled once into a KV cache repeated for every row; (0, None) when there is nothing worth
        sharing (one row, or a shared part that would not hold every row's video placeholders)."""
        if len(rows) < 2:
            return 0, None
        P = min(len(r) for r in rows) - 1  # every row keeps at least one uncached token
        for r in rows[1:]:
            P = min(P, common_prefix(rows[0], r))
        if P < SHARED_PREFIX_MIN:
            return 0, None
        dev = self.device
        n_vis = int(self.model.media_mask(torch.tensor([rows[0][:P]], device=dev)).sum())
        if n_vis != int(self.model.media_mask(torch.tensor([rows[0]], device=dev)).sum()):
            return 0, None  # a placeholder after the shared part: no sharing (never the case for one video)
        if n_vis and visual is None:
            raise ValueError("the prompt holds a video but no visual rows were given")
        cache = self._prefill(rows[0][:P], visual if n_vis else None)
        cache.batch_repeat_interleave(len(rows))
        return P, cache

    def _prefill(self, tokens: list[int], visual: torch.Tensor | None) -> DynamicCache:
        """A one-row KV cache holding ``tokens`` (positions 0..len-1), the video's rows in its placeholders."""
        dev = self.device
        cache = DynamicCache(config=self.model.config.text_config)
        self.model(torch.tensor([tokens], device=dev), media_embeds=visual,
                   position_ids=torch.arange(len(tokens), device=dev)[None], **{CACHE_ARG: cache}, use_cache=True,
                   logits_to_keep=1)
        return cache

    def generate_ids(self, rows: list[list[int]], visual: torch.Tensor | None, gen: GenerationConfig,
                     cache: DynamicCache | None = None, streamer=None, stop_event=None,
                     share_prefix: bool = True) -> list[list[int]]:
        """``model.generate`` over token rows that all show ``visual`` once each; returns each row's
        new tokens, up to (not including) its stop token, and why it ended: "stop" (a stop token),
        "length" (``max_new_tokens`` reached) or "cancelled".

        Several rows (``share_prefix``, no ``cache`` given): the part they share (the video's block)
        is prefilled once and each row is laid out as shared part, padding, own part; otherwise
        rows are left-padded. The attention mask keeps padding out of every row and the position
        ids come from it, so each row's answer is the one it would get alone."""
        dev = self.device
        B, L = len(rows), max(len(r) for r in rows)
        self.check_fits(L, gen.max_new_tokens)
        P = 0
        if share_prefix and cache is None:
            P, cache = self._shared_prefix(rows, visual)
        ids = torch.full((B, L), self.pad_id, dtype=torch.long, device=dev)
        mask = torch.zeros(B, L, dtype=torch.long, device=dev)
        for i, r in enumerate(rows):  # [shared part | padding | own part]; P = 0: left-padded
            ids[i, :P], mask[i, :P] = torch.tensor(r[:P], device=dev), 1
            ids[i, L - len(r) + P:] = torch.tensor(r[P:], device=dev)
            mask[i, L - len(r) + P:] = 1
        n_vis = int(self.model.media_mask(ids[:, P:]).sum())
        embeds = None
        if n_vis:
            if visual is None:
                raise ValueError("the prompt holds a video but no visual rows were given")
            embeds = visual if B == 1 else torch.cat([visual] * B)
        kw = gen.generate_kwargs()
        stopping = StoppingCriteriaList([_Stop(stop_event)]) if stop_event is not None else None
        with torch.random.fork_rng(devices=[]):
            if gen.seed is not None:
                torch.manual_seed(gen.seed)
            out = self.model.generate(input_ids=ids, attention_mask=mask, media_embeds=embeds, streamer=streamer,
                                      stopping_criteria=stopping, **{CACHE_ARG: cache}, **kw)
        answers = []
        for row in out[:, L:].tolist():
            cut = next((k for k, t in enumerate(row) if t in self.stops), None)
            if cut is not None:
                answers.append((row[:cut], "stop"))
            elif stop_event is not None and stop_event.is_set():
                answers.append((row, "cancelled"))
            else:
                answers.append((row, "length" if len(row) >= gen.max_new_tokens else "stop"))
        return answers

    # ---- chat ----------------------------------------------------------------------------
    def ask_stream(self, conv: Conversation, question: str, gen: GenerationConfig | None = None,
                   on_token=None, stop_event: threading.Event | None = None) -> Iterator[str]:
        """Stream the answer's text; the conversation is updated when the stream ends.
        ``on_token(id)`` is called for every generated token, text or not (for timing).
        Closing the iterator early (or setting ``stop_event``) stops generation within a token."""
        gen = gen or GenerationConfig()
        if not conv.messages and self.system_prompt:
            conv.messages.append({"role": "system", "content": self.system_prompt})
        first_user = not any(m["role"] == "user" for m in conv.messages)
        conv.messages.append({"role": "user", "content": question, "video": first_user and conv.visual is not None})
        ids = self.render(conv.messages, conv.visual)
        reuse = min(common_prefix(conv.cached_ids, ids), len(ids) - 1) if conv.cache is not None else 0
        if reuse == 0:
            conv.cache = DynamicCache(config=self.model.config.text_config)
        else:
            conv.cache.crop(reuse - conv.cache.get_seq_length())  # transformers 5: a negative count to drop
        conv.stats.append({"prompt_tokens": len(ids), "reused_tokens": reuse})
        q: queue.Queue = queue.Queue()
        stop = stop_event or threading.Event()
        result: dict = {}

        def run():
            try:
                result["ids"] = self.generate_ids([ids], conv.visual, gen, conv.cache, _QueueStreamer(q), stop)[0]
            except BaseException as e:  # handed to the reader
                result["error"] = e
            finally:
                q.put(("end", None))

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        detok = IncrementalDetokenizer(self.tok)
        try:
            while True:
                kind, tok = q.get()
                if kind == "end":
                    break
                if on_token is not None:
                    on_token(tok)
                if tok in self.stops:
                    continue
                delta = detok.push(tok)
                if delta:
                    yield delta
        finally:
            stop.set()
            worker.join()
        if "error" in result:
            raise result["error"]
        out, finish = result["ids"]
        conv.stats[-1].update(completion_tokens=len(out), finish_reason=finish)
        conv.cached_ids = (ids + out)[: conv.cache.get_seq_length()]
        conv.messages.append({"role": "assistant", "content": self.tok.decode(out, skip_special_tokens=True).strip()})

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
    def ask_batch(self, visual: torch.Tensor | None, questions: list[str], gen: GenerationConfig | None = None,
                  details: bool = False, share_prefix: bool = True) -> list:
        """Answer several single-round questions about one video in one ``generate`` batch.

        The video's block, which every prompt shares, is prefilled once (``share_prefix``; see
        ``generate_ids``); the attention mask and position ids keep padding out of every row's
        computation, so each greedy answer equals the one ``ask`` would give. ``details``:
        dicts with the answer, ``prompt_tokens`` (visual ones included), ``completion_tokens`` and
        ``finish_reason`` instead of the answers alone."""
        gen = gen or GenerationConfig()
        if not questions:
            return []
        rows = [self.render(self._system() + [{"role": "user", "content": q, "video": visual is not None}], visual)
                for q in questions]
        out = []
        for r, (ids, finish) in zip(rows, self.generate_ids(rows, visual, gen, share_prefix=share_prefix)):
            text = self.tok.decode(ids, skip_special_tokens=True).strip()
            out.append({"answer": text, "prompt_tokens": len(r), "completion_tokens": len(ids),
                        "finish_reason": finish} if details else text)
        return out

    def score_options(self, visual: torch.Tensor | None, question: str, options: list[str]) -> list[float]:
        """Log-likelihood of each option as the whole assistant reply (its end-of-turn token
        included) to ``question`` about the video: multiple choice scored the way lm-eval's and
        lmms-eval's ``multiple_choice`` tasks do, without asking the model to name a letter."""
        return self.score_options_many(visual, [question], [options])[0]

    def render_replies(self, visual: torch.Tensor | None, question: str, options: list[str]) -> tuple[list[int], list[list[int]]]:
        """(prompt ids, [reply ids per option]): each option as the assistant reply the chat
        template renders after the prompt, up to and including its end-of-turn token."""
        user = self._system() + [{"role": "user", "content": question, "video": visual is not None}]
        prompt = self.render(user, visual)
        conts = []
        for o in options:
            full = self.render(user + [{"role": "assistant", "content": o}], visual, add_generation_prompt=False)
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
        cache = self._prefill(rendered[0][0][:P], visual) if P > 0 else None
        results = []
        for prompt, conts in rendered:
            if not conts:
                results.append([])
                continue
            rows = [prompt[P:] + c for c in conts]
            B, S = len(rows), max(len(r) for r in rows)
            ids = torch.full((B, S), self.pad_id, dtype=torch.long, device=dev)
            mask = torch.ones(B, P + S, dtype=torch.long, device=dev)
            for i, r in enumerate(rows):  # right-padded: causal attention keeps the pads out of real tokens
                ids[i, : len(r)] = torch.tensor(r, device=dev)
                mask[i, P + len(r):] = 0
            pos = torch.arange(P, P + S, device=dev)[None].expand(B, S)
            if P > 0:
                cache.batch_repeat_interleave(B)
            per_row = self.model.media_mask(ids).sum(1)  # placeholders left after the shared prefix, per row
            vis = None if not bool(per_row.any()) else torch.cat([visual[visual.shape[0] - int(n):] for n in per_row])
            out = self.model(ids, media_embeds=vis, attention_mask=mask, position_ids=pos,
                             **{CACHE_ARG: cache if P > 0 else None}, use_cache=P > 0)
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
