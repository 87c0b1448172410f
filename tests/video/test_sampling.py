import pytest

from kangaroo.video import SAMPLERS, SamplingConfig, sample_timestamps


def test_registered():
    assert {"uniform", "fps", "dynamic"} <= set(SAMPLERS.names())


def test_uniform_midpoints():
    assert sample_timestamps(SamplingConfig(num_frames=4), 8.0) == [1.0, 3.0, 5.0, 7.0]


def test_range():
    ts = sample_timestamps(SamplingConfig(num_frames=2, start=2.0, end=6.0), 100.0)
    assert ts == [3.0, 5.0]
    with pytest.raises(ValueError, match="beyond"):
        sample_timestamps(SamplingConfig(start=20.0), 10.0)


def test_fps_with_bounds():
    assert len(sample_timestamps(SamplingConfig(sampler="fps", fps=2.0), 10.0)) == 20
    assert len(sample_timestamps(SamplingConfig(sampler="fps", fps=2.0, max_frames=8), 10.0)) == 8
    assert len(sample_timestamps(SamplingConfig(sampler="fps", fps=0.1, min_frames=4), 10.0)) == 4


def test_dynamic_grows_with_duration():
    cfg = SamplingConfig(sampler="dynamic", min_frames=16, max_frames=64, seconds_per_frame=2.0, multiple_of=2)
    counts = [len(sample_timestamps(cfg, d)) for d in (5, 40, 75, 1000)]
    assert counts == [16, 20, 38, 64]
    assert all(c % 2 == 0 for c in counts)


def test_token_budget_caps_frames():
    cfg = SamplingConfig(num_frames=160, max_visual_tokens=2048, tokens_per_frame=128)
    ts = sample_timestamps(cfg, 600.0)
    assert len(ts) == 16 and ts[0] == pytest.approx(600 / 32)


@pytest.mark.parametrize("bad", [dict(num_frames=0), dict(fps=0), dict(min_frames=5, max_frames=2),
                                 dict(start=5, end=1), dict(max_visual_tokens=100), dict(sampler="nope"),
                                 dict(max_visual_tokens=10, tokens_per_frame=128)])
def test_bad_config(bad):
    with pytest.raises((ValueError, KeyError)):
        SamplingConfig(**bad)


def test_round_trip():
    cfg = SamplingConfig(sampler="fps", fps=0.5, start=1.0)
    assert SamplingConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        SamplingConfig.from_dict({"frames": 3})
