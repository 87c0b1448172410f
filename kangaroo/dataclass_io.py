"""Strict dict -> dataclass construction for configs loaded from YAML/JSON."""

from __future__ import annotations

import dataclasses


def strict_from_dict(cls, d: dict | None, what: str):
    """``cls(**d)``, refusing keys the dataclass does not have (a typo must not pass silently)."""
    d = dict(d or {})
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what}: {sorted(unknown)}")
    return cls(**d)
