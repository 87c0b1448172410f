import json

import numpy as np
import pytest

from kangaroo.synth import FAMILIES, SynthConfig, generate_dataset, make_timeline, questions, render_frame
from kangaroo.synth.timeline import COLORS
from kangaroo.video import load_video, probe


def test_deterministic():
    cfg = SynthConfig(needle=True, scene_cuts=2)
    a, b = make_timeline(cfg, 5), make_timeline(cfg, 5)
    assert a.to_dict() == b.to_dict()
    assert np.array_equal(render_frame(a, 3.3), render_frame(b, 3.3))
    assert make_timeline(cfg, 6).to_dict() != a.to_dict()
    assert questions(a, 5) == questions(b, 5)


def test_families_registered():
    assert {"caption", "appear_at", "order", "count", "needle", "when"} <= set(FAMILIES.names())


def test_dataset_files(synth_dir):
    m = json.loads((synth_dir / "manifest.json").read_text())
    assert m["counts"]["videos"] == 3
    mc = json.loads((synth_dir / "mcqa.json").read_text())
    for q in mc:
        assert q["candidates"][q["answer_index"]] == q["answer"]
        assert len(set(q["candidates"])) == len(q["candidates"])
        assert (synth_dir / q["video"]).exists()
    conv = json.loads((synth_dir / "conversations.json").read_text())
    assert conv[0]["conversations"][0]["value"].startswith("<video>\n")
    assert [t["from"] for t in conv[0]["conversations"][:2]] == ["human", "gpt"]
    for v in json.loads((synth_dir / "timelines.json").read_text()):
        info = probe(synth_dir / v["video"])
        assert info.codec == "h264"
        assert abs(info.duration - v["config"]["duration"]) < 0.2


def _colour_present(frame, name, tol=40):
    rgb = np.array(COLORS[name])
    return (np.abs(frame.astype(int) - rgb).sum(-1) < tol).mean() > 0.005


def test_answers_match_pixels(synth_dir):
    """Decode the frames the 'appear_at' and 'needle' answers point to: their colour is on screen."""
    mc = json.loads((synth_dir / "mcqa.json").read_text())
    checked = 0
    for q in mc:
        if q["family"] == "appear_at":
            t, colour = q["time"], q["answer"].split()[0]
        elif q["family"] == "needle":
            t, colour = sum(q["evidence"]) / 2, q["answer"].split()[1]
        else:
            continue
        from kangaroo.video import SamplingConfig

        f = load_video(synth_dir / q["video"], SamplingConfig(num_frames=1, start=t - 0.01, end=t + 0.01))
        assert _colour_present(f.frames[0], colour), q
        checked += 1
    assert checked >= 3


def test_static_and_text_videos(tmp_path):
    from kangaroo.synth import write_video
    from kangaroo.video import SamplingConfig

    tl = make_timeline(SynthConfig(static=True, duration=3, text="HELLO 123"), 1)
    p = write_video(tl, tmp_path / "s.mp4")
    f = load_video(p, SamplingConfig(num_frames=3))
    assert np.abs(f.frames[0].astype(int) - f.frames[2].astype(int)).mean() < 1.0  # motionless
    assert not questions(tl, 1, ["count", "when", "order"])


def test_needle_depth():
    tl = make_timeline(SynthConfig(duration=100, needle=True, needle_depth=0.25, needle_seconds=1.0), 3)
    n = [o for o in tl.objects if o.needle][0]
    assert n.t_in == pytest.approx(24.5) and n.t_out == pytest.approx(25.5)


def _counted(tl):
    """The count question's shape (the most repeated one) and its appearances."""
    by = {}
    for o in tl.objects:
        if not o.needle:
            by.setdefault(o.name, []).append(o)
    name = max(by, key=lambda n: (len(by[n]), -min(o.t_in for o in by[n])))
    return name, sorted(by[name], key=lambda o: o.t_in)


def test_uneven_decouples_count_from_screen_time():
    """With uneven slices the on-screen share of the counted shape tracks its count far less, repeats
    never overlap, a visible gap separates them, and the count question still reads the truth."""
    corr = {}
    for uneven in (False, True):
        counts, shares = [], []
        for seed in range(150):
            cfg = SynthConfig(duration=8 + seed % 23, num_objects=3 + seed % 3, uneven=uneven)
            tl = make_timeline(cfg, seed)
            name, apps = _counted(tl)
            counts.append(len(apps))
            shares.append(sum(o.t_out - o.t_in for o in apps) / cfg.duration)
            for a, b in zip(apps, apps[1:]):
                assert b.t_in - a.t_out > (0.25 if uneven else 0.0)
            item = [q for q in questions(tl, seed) if q["family"] == "count"][0]
            assert item["count"] == len(apps) and name in item["question"]
        assert len(set(counts)) == 3
        corr[uneven] = np.corrcoef(counts, shares)[0, 1]
    assert corr[False] > 0.75 and corr[True] < corr[False] - 0.2
    assert make_timeline(SynthConfig(uneven=True), 4).to_dict() == make_timeline(SynthConfig(uneven=True), 4).to_dict()


def test_bad_config():
    with pytest.raises(ValueError):
        SynthConfig(width=31)
    with pytest.raises(ValueError):
        generate_dataset("/tmp/never", 0, 1, 2)


def test_needle_images(tmp_path):
    """--needle-images: that share of the stills shows the needle; share 0 leaves the stills as they were."""
    from kangaroo.synth.timeline import NEEDLE_SHAPES

    kw = dict(num_videos=2, min_seconds=4, max_seconds=5, seed=3, progress=False, images_per_video=6,
              base=SynthConfig(needle=True, fps=4, width=96, height=72))
    generate_dataset(tmp_path / "a", **kw)
    generate_dataset(tmp_path / "b", needle_image_share=0.0, **kw)
    generate_dataset(tmp_path / "c", needle_image_share=1.0, **kw)
    read = lambda d: json.loads((tmp_path / d / "images.json").read_text())  # noqa: E731
    assert read("a") == read("b")
    assert (tmp_path / "a/images/synth_3_00000_0.png").read_bytes() == (tmp_path / "b/images/synth_3_00000_0.png").read_bytes()
    captions = [r["conversations"][1]["value"] for r in read("c")]
    assert len(captions) == 12 and all(any(s in c for s in NEEDLE_SHAPES) for c in captions)
    assert sum(any(s in c for s in NEEDLE_SHAPES) for c in (r["conversations"][1]["value"] for r in read("a"))) < 12
    assert json.loads((tmp_path / "c/manifest.json").read_text())["needle_image_share"] == 1.0
    with pytest.raises(ValueError, match="needle_image_share"):
        generate_dataset(tmp_path / "d", needle_image_share=1.5, **kw)


def test_near_names_are_what_is_shown_nearest_in_time():
    from kangaroo.synth.qa import near_names

    def obj(shape, color, t_in, t_out, change_t=None, change_color=None, needle=False):
        return dict(shape=shape, color=color, t_in=t_in, t_out=t_out, size=0.2, start=[0.5, 0.5], end=[0.5, 0.5],
                    change_t=change_t, change_color=change_color, needle=needle)

    objects = [obj("square", "green", 0.0, 4.0, change_t=3.0, change_color="orange"),
               obj("circle", "red", 5.0, 8.0), obj("star", "cyan", 2.0, 3.0, needle=True),
               obj("triangle", "blue", 10.0, 12.0), obj("circle", "red", 20.0, 22.0)]
    # at 2.0 the green square is on screen: its orange phase (1 s away), then the red circle (3 s),
    # then the blue triangle (8 s); the needle is never offered, a name repeats only once
    assert near_names(objects, 2.0, {"green square"}) == ["orange square", "red circle", "blue triangle"]
    assert near_names(objects, 2.0, {"green square"}, k=1) == ["orange square"]
    assert near_names(objects, 21.0, {"red circle"}) == ["blue triangle", "orange square", "green square"]
