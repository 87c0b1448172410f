"""Differences between the transformers versions we support (5.16 to 5.24), decided once, here.

transformers renamed the KV-cache argument of models, ``generate`` and model outputs from
``past_key_values`` to ``cache`` (5.2x; the old name warns until 5.40). vLLM's CPU build pins
transformers below 5.20 and the lent GPU machines have 5.17, so the name is read from the
installed Llama's signature rather than assumed. Composite configs (``KangarooConfig``) declare their
text config with ``SubConfigSpec`` where it exists (5.2x) and as ``sub_configs`` before.
"""

from __future__ import annotations

import inspect

from transformers import LlamaModel

try:  # composite configs declare their sub-configs with SubConfigSpec from 5.2x; before, as `sub_configs`
    from transformers.configuration_utils import SubConfigSpec
except ImportError:  # transformers < 5.20 (vLLM's CPU build pins it there)
    SubConfigSpec = None

CACHE_ARG = "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"
