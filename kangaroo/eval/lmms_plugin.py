"""lmms-eval model backend: run kangaroo models inside lmms-eval.

lmms-eval's (simple) model interface: a subclass of ``lmms_eval.api.model.lmms``,
registered with ``@register_model(name)``, whose ``generate_until(requests)`` receives
``Instance``s with ``args = (context, gen_kwargs, doc_to_visual, doc_id, task, split)``
and returns one string per request. Usage (after ``pip install lmms-eval``):

    python -c "import kangaroo.eval.lmms_plugin, sys; from lmms_eval.__main__ import cli_evaluate; \
               sys.argv[1:] = ['--model', 'kangaroo', '--model_args', 'pretrained=kangaroo-smol,max_frames_num=32', \
                               '--tasks', 'mvbench', '--batch_size', '1']; cli_evaluate()"

Importing this module registers the model as ``kangaroo``. The logic lives in
``KangarooLMMsCore`` (no lmms-eval import), so it is tested without lmms-eval installed.
"""

from __future__ import annotations

from ..model.chat import Conversation, GenerationConfig, KangarooChat
from ..video import SamplingConfig


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
            if videos:
                rows, info = self._visual(videos[0])
                conv = Conversation(visual=rows, frames=info)
            else:
                conv = Conversation(visual=None)
            text = self.chat.ask(conv, context, gen)
            for stop in gen_kwargs.get("until", []) or []:
                if isinstance(stop, str) and stop and stop in text:
                    text = text.split(stop)[0]
            out.append(text)
        return out

    def loglikelihood(self, requests):
        raise NotImplementedError("kangaroo's lmms-eval backend implements generate_until (video QA tasks)")

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
