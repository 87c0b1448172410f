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


def test_events_needs_the_pixels():
    with pytest.raises(ValueError, match="pixels"):
        sample_timestamps(SamplingConfig(sampler="events"), 10.0)
    with pytest.raises(ValueError, match="event_share"):
        SamplingConfig(sampler="events", event_share=1.5)


def _flash(c=96, at=(45, 48)):
    """Candidates every 0.125 s: a slow drift, and a brief bright square at indices [at)."""
    import numpy as np

    times = (np.arange(c) + 0.5) * 0.125
    x = np.tile(np.linspace(0.2, 0.3, 64, dtype=np.float32), (c, 1)) + times[:, None].astype(np.float32) * 1e-3
    x[at[0]:at[1], :16] = 1.0
    return x, times


def test_pick_events_finds_a_brief_event_uniform_misses():
    from kangaroo.video.sampling import pick_events

    x, times = _flash()
    end = times[-1] + 0.0625
    uniform = pick_events(x, times, 8, 0.0, 0.0, end)
    events = pick_events(x, times, 8, 0.5, 0.0, end)
    assert len(events) == 8 and events == sorted(set(events))
    assert not any(45 <= i < 48 for i in uniform)  # the precondition: uniform frames straddle it
    assert sum(45 <= i < 48 for i in events) == 1  # one frame of the event is enough; no second copy


def test_pick_events_spreads_frames_over_a_still_video():
    import numpy as np

    from kangaroo.video.sampling import pick_events

    times = (np.arange(200) + 0.5) * 0.1
    x = np.zeros((200, 12), np.float32)
    got = times[pick_events(x, times, 10, 0.5, 0.0, 20.0)]
    assert np.diff(got).min() >= 1.0  # no clumps where nothing happens


def test_events_sampler_catches_a_needle_in_a_real_video(tmp_path):
    from kangaroo.synth import SynthConfig, make_timeline, write_video
    from kangaroo.video import load_video

    tl = make_timeline(SynthConfig(duration=12.0, num_objects=2, needle=True, needle_depth=0.1417), seed=3)
    needle = next(o for o in tl.objects if o.needle)
    path = write_video(tl, tmp_path / "needle.mp4")
    half = 0.5 / tl.config.fps  # a frame shows the state half-way through its display interval

    def sees(frames):
        return any(needle.t_in <= t + half < needle.t_out for t in frames.timestamps)

    uniform = load_video(path, SamplingConfig(num_frames=8))
    events = load_video(path, SamplingConfig(sampler="events", num_frames=8))
    assert not sees(uniform) and sees(events)
    assert len(events.timestamps) == 8 and list(events.timestamps) == sorted(events.timestamps)
