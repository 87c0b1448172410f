"""Captioners, fusion, refinement and balance: real models, a real OpenAI-compatible endpoint."""

import os

import numpy as np
import pytest

from kangaroo.data import CaptionerConfig, CurateConfig, FusionConfig, curate
from kangaroo.data.config import CategoryConfig, RefineConfig
from kangaroo.data.refine import balance, categorize, iou, refine_caption

from .conftest import read_jsonl


def test_refine_drops_repeats_and_boilerplate():
    raw = ("The video shows a red car driving down a road. A red car drives down the road. "
           "Trees line the street. The red car is driving down a road!")
    out, st = refine_caption(raw, RefineConfig())
    assert out == "A red car driving down a road. Trees line the street."
    assert st["repeats_dropped"] == 2 and st["sentences_kept"] == 2
    assert iou("a b c", "a b c") == 1.0 and iou("a b", "c d") == 0.0


@pytest.mark.parametrize("raw,reason", [("", "empty_caption"), ("The video shows", "empty_caption"),
                                        ("A cat.", "short_caption"),
                                        ("cat cat cat cat cat cat cat cat cat cat cat dog", "degenerate_caption")])
def test_refine_rejects_degenerate(raw, reason):
    out, st = refine_caption(raw, RefineConfig())
    assert out == "" and st["reason"] == reason


def test_refine_non_ascii():
    out, _ = refine_caption("一只猫坐在窗台上。一只猫坐在窗台上。窗外下着雨。", RefineConfig(min_words=1))
    assert out == "一只猫坐在窗台上。窗外下着雨。"
    assert iou("一只猫坐在窗台上", "一只狗坐在窗台上") == pytest.approx(7 / 9)


def test_categories_from_labels_then_captions():
    cfg = CategoryConfig()
    assert categorize({"source": "/x/a.mp4", "caption": "a dog runs"}, cfg, {"a.mp4": "pets"}) == ("pets", "label")
    assert categorize({"source": "/x/b.mp4", "caption": "a dog and a cat play"}, cfg, {}) == ("animals", "caption")
    assert categorize({"source": "/x/c.mp4", "caption": "abstract colours"}, cfg, {}) == ("other", "default")


def test_balance_is_deterministic_and_hits_the_target():
    rows = [{"id": f"r{i}", "category": "a"} for i in range(60)] + [{"id": f"s{i}", "category": "b"} for i in range(20)]
    kept, dropped, counts = balance(rows, CategoryConfig())
    assert counts["after"] == {"a": 20, "b": 20} and len(kept) == 40 and len(dropped) == 40
    kept2, _, _ = balance(list(reversed(rows)), CategoryConfig())
    assert sorted(r["id"] for r in kept2) == sorted(r["id"] for r in kept)  # order does not matter
    kept, _, counts = balance(rows, CategoryConfig(max_share=0.6))
    assert counts["after"]["b"] == 20 and counts["after"]["a"] / len(kept) <= 0.6 + 1e-9
    kept, _, counts = balance(rows, CategoryConfig(target={"a": 0.75, "b": 0.25}))
    assert counts["after"] == {"a": 60, "b": 20}
    kept, _, counts = balance(rows, CategoryConfig(target={"a": 0.5, "b": 0.5}))
    assert counts["after"] == {"a": 20, "b": 20}


@pytest.fixture(scope="module")
def endpoint(tiny_chat_model, smol_tokenizer, tmp_path_factory):
    """``kangaroo serve`` (tiny random model) as the OpenAI-compatible endpoint."""
    from kangaroo.model.chat import KangarooChat
    from kangaroo.serve import ServeConfig, build_app
    from kangaroo.serve.testserver import LoopbackServer

    cfg = ServeConfig(model="tiny", store=str(tmp_path_factory.mktemp("store")), max_new_tokens=12)
    with LoopbackServer(build_app(cfg, chat=KangarooChat(tiny_chat_model, smol_tokenizer))) as s:
        yield s.url + "/v1"


def test_openai_captioners_and_fuser_over_http(endpoint, shots_video, tmp_path):
    """Two endpoint captioners + an endpoint fuser, over real HTTP with image_url parts."""
    cfg = CurateConfig(captioners=[CaptionerConfig("openai", model="tiny", url=endpoint, max_new_tokens=8),
                                   CaptionerConfig("openai", model="tiny", url=endpoint, max_new_tokens=6,
                                                   prompt="What is in this picture?")],
                       fusion=FusionConfig("openai", model="tiny", url=endpoint, max_new_tokens=12),
                       refine=RefineConfig(min_words=1, min_unique_ratio=0.0), balance=False)
    curate(shots_video["path"], str(tmp_path), cfg, workers=0, progress=False)
    rows = read_jsonl(tmp_path / "manifest.jsonl") + [
        r for r in read_jsonl(tmp_path / "rejects.jsonl") if r["stage"] in ("refine", "caption")]
    assert rows, "the clip that passed the filters was captioned"
    r = rows[0]
    assert set(r["frame_captions"]) == {"openai:tiny"} or len(r["frame_captions"]) == 1
    assert all(len(v) == 5 for v in r["frame_captions"].values())
    assert isinstance(r["raw_caption"], str)
    assert len(r["keyframes"]) == 5 and all(os.path.exists(tmp_path / k) for k in r["keyframes"])


def test_endpoint_down_is_a_reject_row(shots_video, tmp_path):
    cfg = CurateConfig(captioners=[CaptionerConfig("openai", model="m", url="http://127.0.0.1:9/v1", timeout_s=2)],
                       fusion=FusionConfig("concat"))
    curate(shots_video["path"], str(tmp_path), cfg, workers=0, progress=False)
    assert read_jsonl(tmp_path / "manifest.jsonl") == []
    errs = [r for r in read_jsonl(tmp_path / "rejects.jsonl") if r["stage"] == "caption"]
    assert len(errs) == 1 and errs[0]["reason"] == "caption_error" and "127.0.0.1:9" in errs[0]["detail"]


@pytest.mark.slow
def test_kangaroo_smol_captions_and_smollm2_fuses(shots_video, tmp_path):
    """The default path: kangaroo-smol captions 5 key frames, SmolLM2-135M-Instruct fuses them."""
    cfg = CurateConfig(balance=False)
    cfg.captioners[0].max_new_tokens = 24
    cfg.fusion.max_new_tokens = 48
    curate(shots_video["path"], str(tmp_path), cfg, workers=0, progress=False)
    rows = read_jsonl(tmp_path / "manifest.jsonl") + [
        r for r in read_jsonl(tmp_path / "rejects.jsonl") if r["stage"] == "refine"]
    [r] = rows
    [caps] = r["frame_captions"].values()
    assert len(caps) == 5 and all(isinstance(c, str) for c in caps)
    assert r["raw_caption"].strip()  # the LLM wrote something; refinement judged it
    assert r.get("caption") or r["reason"] in ("short_caption", "degenerate_caption", "empty_caption")


def test_images_are_recaptioned_with_labels(tmp_path, endpoint):
    from PIL import Image

    recs = []
    for i in range(4):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((64, 96, 3), 40 * i, np.uint8)).save(p)
        recs.append({"image": p.name, "caption": "alt text", "label": "a" if i < 3 else "b"})
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    recs.append({"image": "broken.png"})
    import json

    (tmp_path / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    cfg = CurateConfig(captioners=[CaptionerConfig("openai", model="tiny", url=endpoint, max_new_tokens=8)],
                       fusion=FusionConfig("concat"), refine=RefineConfig(min_words=1, min_unique_ratio=0.0))
    rep = curate(str(tmp_path / "images.jsonl"), str(tmp_path / "out"), cfg, workers=0, progress=False)
    man = read_jsonl(tmp_path / "out" / "manifest.jsonl")
    rej = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert {r["category"] for r in man} == {"a", "b"} and len(man) == 2  # balanced 1:1
    assert all(r["kind"] == "image" and r["source_caption"] == "alt text" for r in man)
    assert {r["reason"] for r in rej} == {"category_balance", "not_a_video"}
    assert rep["categories"]["before"] == {"a": 3, "b": 1}


def test_interrupted_input_does_not_caption_its_finished_clips_again(endpoint, shots_video, tmp_path):
    import httpx

    cfg = CurateConfig(captioners=[CaptionerConfig("openai", model="tiny", url=endpoint, max_new_tokens=6)],
                       fusion=FusionConfig("concat"), refine=RefineConfig(min_words=1, min_unique_ratio=0.0),
                       balance=False)
    curate(shots_video["path"], str(tmp_path), cfg, workers=0, progress=False)
    first = read_jsonl(tmp_path / "manifest.jsonl")
    assert first and list((tmp_path / "clips").glob("*.json"))

    def requests_served():
        h = httpx.get(endpoint.rsplit("/v1", 1)[0] + "/health").json()
        return h["visual_cache_hits"] + h["visual_cache_misses"]

    before = requests_served()
    os.remove(tmp_path / "journal.jsonl")  # killed after its clips were captioned, before the input was journaled
    curate(shots_video["path"], str(tmp_path), cfg, workers=0, progress=False)
    assert requests_served() == before  # nothing was captioned again
    assert read_jsonl(tmp_path / "manifest.jsonl") == first
