"""lmms-eval model backend: run kangaroo models inside lmms-eval.

lmms-eval's (simple) model interface: a subclass of ``lmms_eval.api.model.lmms``,
registered with ``@register_model(name)``, whose ``generate_until(requests)`` receives
``Instance``s with ``args = (context, gen_kwargs, doc_to_visual, doc_id, task, split)``
and returns one string per request; ``loglikelihood(requests)`` receives
``args = (context, continuation, doc_to_visual, doc_id, task, split)`` and returns
(log-likelihood, is_greedy) pairs. Usage (after ``pip install lmms-eval``):

    python -c "import kangaroo.eval.lmms_plugin, sys; from lmms_eval.__main__ import cli_evaluate; \
               sys.argv[1:] = ['--model', 'kangaroo', '--model_args', 'pretrained=kangaroo-smol,max_frames_num=32', \
                               '--tasks', 'mvbench', '--batch_size', '1']; cli_evaluate()"

``loglikelihood`` serves tasks with lmms-eval's ``multiple_choice`` output type.
Importing this module registers the model as ``kangaroo``. The logic lives in
``KangarooLMMsCore`` (no lmms-eval import), so it is tested without lmms-eval installed.
"""

from __future__ import annotations

from ..model.chat import Conversation, GenerationConfig, KangarooChat
from ..video import SamplingConfig
from . import core as eval_core


class KangarooLMMsCore:
    def __init__(self, pretrained: str = "kangaroo-smol", max_frames_num: int = 16, device: str = "cpu",
                 chat: KangarooChat | None = None, **kwargs):
        self.chat = chat or KangarooChat.load(pretrained, device=device)
        self.frames = int(max_frames_num)
        self.task_dict: dict = {}
        self._encoded: dict = {}

    def _visual(self, video: str):
        if video not in self._encoded:
            self._encoded = {video: self.chat.encode(video, SamplingConfig(num_frames=self.frames))}  # keep one
        return self._encoded[video]

    def generate_until(self, requests) -> list[str]:
        out = []
        for req in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual else []
            videos = [v for v in (visuals or []) if isinstance(v, str)]
            gen = GenerationConfig(max_new_tokens=int(gen_kwargs.get("max_new_tokens", 128)),
                                   temperature=float(gen_kwargs.get("temperature", 0) or 0),
                                   top_p=float(gen_kwargs.get("top_p", 1.0) or 1.0),
                                   do_sample=bool(gen_kwargs.get("do_sample", False)))
            rows = self._visual(videos[0])[0] if videos else None
            if gen.sampling:
                text = self.chat.ask(Conversation(visual=rows), context, gen)
            else:  # greedy, as lmms-eval's tasks ask: the evaluation core's own path (kangaroo eval's too)
                text = eval_core.generate_answers(self.chat, rows, [context], gen.max_new_tokens)[0]
            for stop in gen_kwargs.get("until", []) or []:
                if isinstance(stop, str) and stop and stop in text:
                    text = text.split(stop)[0]
            out.append(text)
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
            doc = self.task_dict[task][split][doc_id]
            cont = target if isinstance(target, str) else target(doc)
            ctx = contexts if isinstance(contexts, str) else contexts[0]
            visuals = doc_to_visual(doc) if doc_to_visual else []
            videos = [v for v in (visuals or []) if isinstance(v, str)]
            groups.setdefault(videos[0] if videos else None, {}).setdefault(ctx, []).append((k, str(cont).strip()))
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


try:  # register with lmms-eval when it is installed
    from lmms_eval.api.model import lmms
    from lmms_eval.api.registry import register_model

    @register_model("kangaroo")
    class Kangaroo(KangarooLMMsCore, lmms):  # type: ignore[misc]
        def __init__(self, **kwargs):
            lmms.__init__(self)
            KangarooLMMsCore.__init__(self, **kwargs)

except ImportError:
    Kangaroo = None
