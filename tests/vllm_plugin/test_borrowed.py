"""The vLLM model borrows the HF model's video methods (``encode_video = _HF.encode_video``); every
method of ours those call on ``self`` must be borrowed too, or vLLM fails at the first video request
(it did once: ``video_chunk`` was added to the HF model only). Read from the source, without vLLM."""

import ast
import inspect
import pathlib
import textwrap

from kangaroo.model.modeling import KangarooForConditionalGeneration as HF

PLUGIN = pathlib.Path(__file__).parents[2] / "kangaroo" / "vllm_plugin" / "model.py"


def _plugin_class() -> ast.ClassDef:
    tree = ast.parse(PLUGIN.read_text())
    return next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "KangarooForConditionalGeneration")


def _borrowed() -> set[str]:
    return {a.targets[0].id for a in _plugin_class().body if isinstance(a, ast.Assign)
            and isinstance(a.value, ast.Attribute) and isinstance(a.value.value, ast.Name) and a.value.value.id == "_HF"}


def _own() -> set[str]:
    return {f.name for f in _plugin_class().body if isinstance(f, ast.FunctionDef)}


def _self_methods(name: str) -> set[str]:
    """Methods defined on the HF model's class that ``HF.<name>`` calls as ``self.<m>(...)``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(getattr(HF, name))))
    own = {k for k, v in vars(HF).items() if callable(v)}
    return {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and isinstance(n.func.value, ast.Name) and n.func.value.id == "self" and n.func.attr in own}


def test_every_method_the_borrowed_ones_call_is_borrowed():
    borrowed = _borrowed()
    assert {"encode_video", "video_block"} <= borrowed
    todo, seen, own = list(borrowed), set(), _own()
    while todo:  # the closure: a borrowed method's own calls must be borrowed as well
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        if m in borrowed:
            todo += sorted(_self_methods(m))
    assert seen <= borrowed | own, f"kangaroo/vllm_plugin/model.py must also borrow: {sorted(seen - borrowed - own)}"
