"""lmms-eval model backend: run kangaroo models inside lmms-eval.

lmms-eval's (simple) model interface: a subclass of ``lmms_eval.api.model.lmms``,
registered with ``@register_model(name)``, whose ``generate_until(requests)`` receives
``Instance``s with ``args = (context, gen_kwargs, doc_to_visual, doc_id, task, split)``
and returns one string per request; ``loglikelihood(requests)`` receives
``args = (context, continuation, doc_to_visual, doc_id, task, split)`` and returns
(log-likelihood, is_greedy) pairs.

Discovery: lmms-eval 0.7 builds its model registry (``lmms_eval.models.MODEL_REGISTRY_V2``) from
its own models, then from the Python entry points of group ``lmms_eval.models``, each a
``ModelManifest`` or a callable returning one. Our pyproject declares ``kangaroo =
"kangaroo.eval.lmms_plugin:lmms_manifest"`` there, so with both packages installed:

    lmms-eval --model kangaroo --model_args pretrained=kangaroo-smol,max_frames_num=16 \
              --tasks mvbench --batch_size 1

(a local task made from any of our benchmarks: ``kangaroo.eval.lmms_task``; the end-to-end check
against lmms-eval itself: ``make lmms-test``, docs/evaluation.md).

``loglikelihood`` serves tasks with lmms-eval's ``multiple_choice`` output type.
Importing this module also registers the model as ``kangaroo`` with lmms-eval's older
``@register_model`` registry. The logic lives in
``KangarooLMMsCore`` (no lmms-eval import), so it is tested without lmms-eval installed.
"""

from __future__ import annotations

from ..model.chat import Conversation, GenerationConfig, KangarooChat
from ..video import SamplingConfig
from . import core as eval_core


class KangarooLMMsCore:
    def __init__(self, pretrained: str = "kangaroo-smol", max_frames_num: int = 16, device: str = "cpu",
                 decode_batch_size: int = 8, chat: KangarooChat | None = None, **kwargs):
        # kwargs: what lmms-eval passes to every model (batch_size, max_batch_size) and we do not use
        self.chat = chat or KangarooChat.load(pretrained, device=device)
        self.frames = int(max_frames_num)
        self.decode_batch_size = int(decode_batch_size)  # greedy questions about one video decoded together
        if self.frames < 1 or self.decode_batch_size < 1:
            raise ValueError(f"max_frames_num and decode_batch_size must be >= 1, got {max_frames_num}, {decode_batch_size}")
        self.task_dict: dict = {}
        self._encoded: dict = {}

    def _visual(self, video: str):
        if video not in self._encoded:
            self._encoded = {video: self.chat.encode(video, SamplingConfig(num_frames=self.frames))}  # keep one
        return self._encoded[video]

    def _video_of(self, doc_to_visual, doc_id, task, split) -> str | None:
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual else []
        videos = [v for v in (visuals or []) if isinstance(v, str)]
        return videos[0] if videos else None

    def generate_until(self, requests) -> list[str]:
        """One reply per request. Greedy requests (lmms-eval's tasks ask for greedy decoding) take
        the evaluation core's own path, ``kangaroo eval``'s: the requests about one video share its
        encoding and are decoded in batches of ``decode_batch_size``, in the order they came."""
        out: list = [None] * len(requests)
        greedy: dict = {}  # (video, max_new_tokens) -> [(request index, context, until)]
        for k, req in enumerate(requests):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            video = self._video_of(doc_to_visual, doc_id, task, split)
            gen = GenerationConfig(max_new_tokens=int(gen_kwargs.get("max_new_tokens", 128)),
                                   temperature=float(gen_kwargs.get("temperature", 0) or 0),
                                   top_p=float(gen_kwargs.get("top_p", 1.0) or 1.0),
                                   do_sample=bool(gen_kwargs.get("do_sample", False)))
            until = [s for s in (gen_kwargs.get("until") or []) if isinstance(s, str) and s]
            if gen.sampling:
                rows = self._visual(video)[0] if video else None
                out[k] = _cut(self.chat.ask(Conversation(visual=rows), context, gen), until)
            else:
                greedy.setdefault((video, gen.max_new_tokens), []).append((k, context, until))
        for (video, n_new), reqs in greedy.items():
            rows = self._visual(video)[0] if video else None
            texts = eval_core.generate_answers(self.chat, rows, [c for _, c, _ in reqs], n_new, self.decode_batch_size)
            for (k, _, until), text in zip(reqs, texts):
                out[k] = _cut(text, until)
        return out

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        """lmms-eval's ``multiple_choice`` output type: ``args = (context, continuation or
        doc_to_target, doc_to_visual, doc_id, task, split)``; returns (log-likelihood, is_greedy)
        per request. The context is the user turn and the continuation (its leading target
        delimiter stripped) the assistant reply, as lmms-eval's LLaVA backend scores them.
        Requests about one video share its encoding and its prefilled KV prefix; the options
        of one context run as one batch."""
        groups: dict = {}  # video -> context -> [(request index, continuation)]
        for k, req in enumerate(requests):
            contexts, target, doc_to_visual, doc_id, task, split = req.args
            cont = target if isinstance(target, str) else target(self.task_dict[task][split][doc_id])
            ctx = contexts if isinstance(contexts, str) else contexts[0]
            video = self._video_of(doc_to_visual, doc_id, task, split)
            groups.setdefault(video, {}).setdefault(ctx, []).append((k, str(cont).strip()))
        out: list = [None] * len(requests)
        for video, by_ctx in groups.items():
            rows = self._visual(video)[0] if video else None
            ctxs = list(by_ctx)
            res = self.chat.option_loglikelihoods(rows, ctxs, [[c for _, c in by_ctx[q]] for q in ctxs])
            for q, scored in zip(ctxs, res):
                for (k, _), pair in zip(by_ctx[q], scored):
                    out[k] = pair
        return out

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("multi-round lmms-eval tasks are not supported yet")


def _cut(text: str, until: list[str]) -> str:
    """The reply up to the first of lmms-eval's stop strings."""
    for stop in until:
        text = text.split(stop)[0]
    return text


def lmms_manifest():
    """The ``lmms_eval.models`` entry point (pyproject.toml): lmms-eval 0.7's manifest of our
    backend, a "simple" model (it renders its own prompts)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="kangaroo", simple_class_path=f"{__name__}.Kangaroo")


try:  # the backend class, when lmms-eval is installed
    from lmms_eval.api.model import lmms
    from lmms_eval.api.registry import register_model

    @register_model("kangaroo")
    class Kangaroo(KangarooLMMsCore, lmms):  # type: ignore[misc]
        is_simple = True

        def __init__(self, **kwargs):
            lmms.__init__(self)
            KangarooLMMsCore.__init__(self, **kwargs)

except ImportError:
    Kangaroo = None
