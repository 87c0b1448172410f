"""Synthetic videos with a known event timeline, and the data built from it."""

from .dataset import generate_dataset
from .qa import FAMILIES, caption, mc_prompt, questions
from .render import render_frame, write_video
from .timeline import SynthConfig, Timeline, make_timeline

__all__ = ["generate_dataset", "FAMILIES", "caption", "mc_prompt", "questions", "render_frame", "write_video",
           "SynthConfig", "Timeline", "make_timeline"]
