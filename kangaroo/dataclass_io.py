"""Strict dict -> dataclass construction for configs loaded from YAML/JSON."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing


def strict_from_dict(cls, d: dict | None, what: str):
    """``cls(**d)``, refusing keys the dataclass does not have (a typo must not pass silently)."""
    if d is not None and not isinstance(d, dict):
        raise ValueError(f"{what.replace(' keys', '')}: expected a mapping of keys, got {_show(d)}")
    d = dict(d or {})
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what}: {sorted(unknown)}")
    return cls(**d)


# ---- value types ---------------------------------------------------------------------------------
# YAML 1.1 (PyYAML) reads "1e-4" (no dot) as a string: a float field takes such a string as the number.
_FLOAT_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def check_types(obj, prefix: str = "") -> None:
    """Check every field of the dataclass ``obj`` against its annotation; ``ValueError`` names the
    first field whose value is of the wrong type (``max_steps: expected an integer, got 'two'``).
    Integers in float fields become floats (and "1e-4" strings the float they spell).
    Nested dataclass fields are checked by their own ``__post_init__``; a dict is accepted for one."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        setattr(obj, f.name, conform(getattr(obj, f.name), hints[f.name], prefix + f.name))


def conform(value, tp, key: str):
    """``value`` as type ``tp`` (see ``check_types``), or ``ValueError`` naming ``key``."""
    ok, out = _conform(value, tp)
    if ok:
        return out
    inner = [a for a in typing.get_args(tp) if a is not type(None)] if value is not None else []
    list_tp = tp if typing.get_origin(tp) in (list, tuple) else inner[0] if len(inner) == 1 else None
    if list_tp is not None and typing.get_origin(list_tp) in (list, tuple) and isinstance(value, (list, tuple)):
        item = typing.get_args(list_tp)[0]
        for i, x in enumerate(value):  # name the element that is wrong
            if not _conform(x, item)[0]:
                raise ValueError(f"{key}[{i}]: expected {describe(item)}, got {_show(x)}")
    raise ValueError(f"{key}: expected {describe(tp)}, got {_show(value)}")


def _conform(v, tp):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is typing.Any:
        return True, v
    if origin in (typing.Union, types.UnionType):
        for a in args:
            ok, out = _conform(v, a)
            if ok:
                return True, out
        return False, v
    if tp is type(None):
        return v is None, v
    if tp is bool:
        return isinstance(v, bool), v
    if tp is int:
        return isinstance(v, int) and not isinstance(v, bool), v
    if tp is float:
        if isinstance(v, str) and _FLOAT_TEXT.match(v.strip()):
            v = float(v)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return True, float(v)
        return False, v
    if tp is str:
        return isinstance(v, str), v
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(v, (list, tuple)):
            return False, v
        if not args:
            return True, v
        item = args[0]
        outs = []
        for x in v:
            ok, out = _conform(x, item)
            if not ok:
                return False, v
            outs.append(out)
        return True, type(v)(outs) if origin is tuple else outs
    if origin is dict or tp is dict:
        if not isinstance(v, dict):
            return False, v
        if not args:
            return True, v
        out = {}
        for k, x in v.items():
            ok_k, k2 = _conform(k, args[0])
            ok_v, x2 = _conform(x, args[1])
            if not (ok_k and ok_v):
                return False, v
            out[k2] = x2
        return True, out
    if dataclasses.is_dataclass(tp):
        return isinstance(v, (tp, dict)), v
    return True, v  # a type this checker does not know: not its business


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null",
          dict: "a mapping", list: "a list"}


def describe(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin in (list, tuple) and args:
        inner = describe(args[0])
        if inner.startswith("a mapping"):
            return "a list of mappings" + inner[len("a mapping"):]
        return "a list of " + ({"an integer": "integers", "a number": "numbers", "a string": "strings",
                                "true or false": "booleans"}.get(inner, inner))
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return _NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def _show(v) -> str:
    text = repr(v)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(v).__name__})"


# ---- value ranges --------------------------------------------------------------------------------

def check_range(key: str, value, low=None, high=None, low_open: bool = False, high_open: bool = False) -> None:
    """``ValueError`` naming ``key`` unless ``low <= value <= high`` (``<`` for an open end); None passes.
    Floats must also be finite."""
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{key}: must be a finite number, got {value}")
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        bounds = ([f"{'>' if low_open else '>='} {low}"] if low is not None else []) + \
                 ([f"{'<' if high_open else '<='} {high}"] if high is not None else [])
        raise ValueError(f"{key}: must be {' and '.join(bounds)}, got {value}")
