"""kangaroo: the Kangaroo long-context video-language model, end to end.

Subpackages, one per stage of the system:
  video   probe, decode, sample and preprocess videos
  synth   synthetic videos with a ground-truth event timeline, and QA built from it
  model   the Kangaroo architecture, weights I/O, chat and generation
  data    the curation system
  train   the curriculum trainer
  eval    benchmarks and the evaluation harness
  serve   the OpenAI-compatible server and web chat page
"""

import logging as _logging

__version__ = "0.1.0"

# torchao (the optional `quant` extra; transformers imports it whenever it is installed) logs a
# warning for each of its CUDA-only kernel libraries on a CPU machine, and torch one per enum it
# registers: noise on every command's stderr, not something a user can act on.
_logging.getLogger("torchao").setLevel(_logging.ERROR)
_logging.getLogger("torch.utils._pytree").setLevel(_logging.ERROR)


def load(name_or_dir: str, device: str = "cpu", dtype=None):
    """(model, processor) for a built-in name (``kangaroo-smol``) or a model folder."""
    from .model.weights import load as _load

    return _load(name_or_dir, device=device, dtype=dtype)
