"""Data curation (docs/SPEC.md section 3): scene cuts, filters, fused captions, balance; resumable, Ray scale-out."""

from .config import CaptionerConfig, CurateConfig, FilterConfig, FusionConfig, ScenesConfig
from .filters import FILTERS
from .captions import CAPTIONERS, FUSERS
from .runner import EXECUTORS, curate, list_inputs

__all__ = ["CaptionerConfig", "CurateConfig", "FilterConfig", "FusionConfig", "ScenesConfig", "FILTERS",
           "CAPTIONERS", "FUSERS", "EXECUTORS", "curate", "list_inputs"]
