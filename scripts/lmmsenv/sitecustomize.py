"""sitecustomize of the lmms-eval environment (.lmmsenv, `make lmms-test`): nothing else.

lmms-eval 0.7 requires torchvision and timm. PyPI's torchvision 0.28 for Linux is built against
CUDA torch: with the CPU torch wheel we pin, its compiled ops (torchvision/_C.so, which needs
libc10_cuda.so) do not load. torchvision then skips the Meta kernels of its ops, except two that
it registers unconditionally with ``torch.library.register_fake("torchvision::nms")`` (and
``qnms``), which raise "operator torchvision::nms does not exist" at ``import torchvision``, and so
at ``import transformers``'s vision parts and ``import lmms_eval``. Declaring the two schemas
(no kernel) lets torchvision import; calling ``torchvision.ops.nms`` still fails, with torch's
clear "no kernel" error. Nothing on our path (video decoding is PyAV's; the model is ours) calls
torchvision's compiled ops. The schemas are declared lazily, just before torchvision's
``_meta_registrations`` is imported, so interpreters that never import torchvision (pip) do not
pay for importing torch.
"""

import importlib.abc
import sys

_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


class _DeclareTorchvisionOps(importlib.abc.MetaPathFinder):
    def __init__(self):
        self.lib = None

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision._meta_registrations" and self.lib is None:
            import torch

            if not hasattr(torch.ops.torchvision, "nms"):  # the compiled ops did not load
                self.lib = torch.library.Library("torchvision", "FRAGMENT")  # kept alive: the schemas live with it
                for schema in _SCHEMAS:
                    self.lib.define(schema)
        return None  # the module itself is found by the usual finders


sys.meta_path.insert(0, _DeclareTorchvisionOps())
