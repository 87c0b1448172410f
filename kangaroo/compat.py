"""Differences between the transformers versions we support (5.16 to 5.24), decided once, here.

transformers renamed the KV-cache argument of models, ``generate`` and model outputs from
``past_key_values`` to ``cache`` (5.24; the old name warns until 5.40). vLLM's CPU build pins
transformers below 5.20 and the lent GPU machines have 5.17, so the name is read from the
installed Llama's signature rather than assumed.

Composite configs declare their sub-configs as ``sub_configs_defaults`` of ``SubConfigSpec``s
(with a default model type; the base config builds them) from 5.20 on; before that, as a plain
``sub_configs = {key: config class}`` that the composite's own ``__post_init__`` builds.
``SubConfigSpec`` is None on those versions. Both paths are tested (docs/compat.md).
"""

from __future__ import annotations

import inspect

from transformers import LlamaModel

try:  # transformers >= 5.20
    from transformers.configuration_utils import SubConfigSpec
except ImportError:  # 5.16-5.19
    SubConfigSpec = None

CACHE_ARG = "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"
