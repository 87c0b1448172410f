"""A folder of JPEG frames read as a video: true timestamps at its stated rate, every sampler."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from kangaroo.video import DecodeOptions, NotAVideoError, SamplingConfig, VideoDecodeError, load_video, probe


def write_frames(video, folder, fps=3.0, seconds=10.0, quality=90):
    """Real frames of ``video`` at ``fps``, as 00001.jpg, 00002.jpg, ... (MVBench's TVQA layout)."""
    n = int(seconds * fps)
    got = load_video(video, SamplingConfig(sampler="fps", fps=fps, max_frames=n, min_frames=n))
    os.makedirs(folder, exist_ok=True)
    for k, img in enumerate(got.frames):
        Image.fromarray(img).save(os.path.join(folder, f"{k + 1:05d}.jpg"), quality=quality)
    return str(folder)


@pytest.fixture(scope="module")
def clip(bikes, tmp_path_factory):
    return write_frames(bikes, tmp_path_factory.mktemp("tvqa") / "frames_fps3_hq" / "castle_s01e01_seg02_clip_00")


def jpeg(folder, k):
    return np.asarray(Image.open(os.path.join(folder, f"{k + 1:05d}.jpg")).convert("RGB"))


def test_probe_frame_folder(clip):
    info = probe(clip)
    assert (info.fps, info.num_frames, info.num_frames_exact, info.container) == (3.0, 30, True, "frames")
    assert (info.width, info.height, info.codec) == (640, 272, "jpeg") and abs(info.duration - 10.0) < 1e-9
    assert not info.variable_fps


def test_samplers_get_true_timestamps_and_the_right_frames(clip):
    got = load_video(clip, SamplingConfig(num_frames=6))
    want = [int(t * 3 + 1e-9) for t in got.requested]  # frame k is on screen during [k/3, (k+1)/3)
    assert np.allclose(got.timestamps, np.asarray(want) / 3.0)
    for img, k in zip(got.frames, want):
        assert np.array_equal(img, jpeg(clip, k))
    part = load_video(clip, SamplingConfig(sampler="fps", fps=1.0, start=2.0, end=6.0))
    assert len(part) == 4 and all(2.0 <= t < 6.0 for t in part.timestamps)
    assert np.allclose(part.timestamps * 3, np.round(part.timestamps * 3))  # always a frame's own time
    ev = load_video(clip, SamplingConfig(sampler="events", num_frames=6))  # the thumbnail scan reads the folder
    assert len(ev) == 6 and ev.stats["backend"] == "frames"
    small = load_video(clip, SamplingConfig(num_frames=2), DecodeOptions(max_side=160))
    assert small.frames.shape[1:] == (68, 160, 3)


def test_gap_in_numbering_is_a_gap_in_time(clip, tmp_path):
    d = shutil.copytree(clip, tmp_path / "fps3" / "gappy")
    os.remove(os.path.join(d, "00011.jpg"))  # frame 10 (t = 3.333 s) was dropped
    info = probe(d)
    assert info.num_frames == 29 and info.variable_fps and abs(info.duration - 10.0) < 1e-9
    got = load_video(d, SamplingConfig(sampler="fps", fps=3.0, start=3.0, end=4.0, max_frames=3))
    assert np.allclose(got.requested, [3 + 1 / 6, 3.5, 3 + 5 / 6])
    # 3.5 s falls in the dropped frame's time: frame 9 (t = 3.0) is still on screen; 00012.jpg keeps 11/3 s
    assert np.allclose(got.timestamps, [3.0, 3.0, 11 / 3])
    assert np.array_equal(got.frames[1], jpeg(clip, 9)) and np.array_equal(got.frames[2], jpeg(clip, 11))


def test_frame_folder_refusals(clip, tmp_path):
    plain = str(shutil.copytree(clip, tmp_path / "plain" / "clip"))
    with pytest.raises(NotAVideoError, match="states no frame rate"):
        load_video(plain)
    assert load_video(plain, SamplingConfig(num_frames=2), DecodeOptions(frame_fps=3.0)).info.fps == 3.0
    empty = tmp_path / "fps3" / "empty.mp4"
    empty.mkdir(parents=True)
    with pytest.raises(NotAVideoError, match="is a directory"):
        probe(str(empty))
    broken = str(shutil.copytree(clip, tmp_path / "fps3" / "broken"))
    open(os.path.join(broken, "00004.jpg"), "wb").write(b"not a jpeg")
    with pytest.raises(VideoDecodeError) as e:
        load_video(broken, SamplingConfig(sampler="fps", fps=3.0, max_frames=30))
    assert "00004.jpg" in str(e.value)


def test_cli_on_a_frame_folder(clip, tmp_path):
    r = subprocess.run([sys.executable, "-m", "kangaroo.cli", "frames", clip, "--num", "3", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(os.listdir(tmp_path)) == 3
