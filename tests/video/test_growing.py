import threading
import time

import numpy as np
import pytest

from kangaroo.video import SamplingConfig, decode_frames, load_video
from kangaroo.video.errors import VideoNotFoundError
from kangaroo.video.growing import GrowingConfig, GrowingFile, StreamReader
from tests.video.growing_media import BackgroundWriter


@pytest.mark.parametrize("fmt", ["mpegts", "matroska"])
def test_reader_follows_a_growing_file_and_matches_the_finished_decode(tmp_path, fmt):
    path = tmp_path / f"live.{'ts' if fmt == 'mpegts' else 'mkv'}"
    # Matroska's demuxer reads about 20 frames (5 s here) before its first one (its probe): a longer file
    w = BackgroundWriter(path, seconds=5.0 if fmt == "mpegts" else 10.0, fps=4.0, fmt=fmt, delay=0.03)
    r = StreamReader(str(path), GrowingConfig(fps=2.0, idle_timeout_s=1.5, poll_s=0.02))
    w.start()
    got, seen_while_writing = [], 0
    for t, img in r.frames():
        got.append((t, img))
        if w.is_alive():
            seen_while_writing += 1
    w.join()
    assert w.error is None
    assert seen_while_writing > 0  # frames came out before the writer finished
    assert r.ended and r.end_reason == "no new data for 1.5s"
    # the frames the decoder gives at the sampler's targets (i + 0.5) / fps of the finished file
    done = decode_frames(str(path), [(i + 0.5) / 2.0 for i in range(len(got))])
    assert len(got) == w.n // 2
    assert [round(t, 4) for t, _ in got] == [round(float(t), 4) for t in done.timestamps]
    assert np.array_equal(np.stack([im for _, im in got]), done.frames)


def test_a_pause_longer_than_a_poll_is_waited_out_not_taken_for_the_end(tmp_path):
    path = tmp_path / "live.ts"
    w = BackgroundWriter(path, seconds=4.0, fps=4.0, delay=0.0, pause_after=6, pause_s=0.6)
    r = StreamReader(str(path), GrowingConfig(fps=4.0, idle_timeout_s=2.0, poll_s=0.02))
    w.start()
    ts = [t for t, _ in r.frames()]
    w.join()
    assert len(ts) == 16 and ts == sorted(ts)


def test_read_never_blocks_past_its_timeout_and_stop_ends_a_wait(tmp_path):
    path = tmp_path / "empty.ts"
    path.write_bytes(b"")
    f = GrowingFile(str(path), idle_timeout_s=0.3, poll_s=0.01)
    assert f.read(10) == b"" and f.timed_out
    path.write_bytes(b"abc")
    f2 = GrowingFile(str(path), idle_timeout_s=30, poll_s=0.01)
    assert f2.read(10) == b"abc"
    threading.Timer(0.2, f2.stop_event.set).start()
    assert f2.read(10) == b""  # stop() returned it long before the 30 s timeout
    assert not f2.timed_out


def test_an_empty_file_that_never_grows_reports_an_error_not_a_hang(tmp_path):
    path = tmp_path / "never.ts"
    path.write_bytes(b"")
    r = StreamReader(str(path), GrowingConfig(idle_timeout_s=0.3, poll_s=0.01))
    with pytest.raises(Exception):
        list(r.frames())
    assert r.ended


def test_missing_source_and_bad_config_are_clear_errors(tmp_path):
    with pytest.raises(VideoNotFoundError):
        StreamReader(str(tmp_path / "nope.ts"), GrowingConfig(open_timeout_s=0.1))
    with pytest.raises(ValueError, match="fps"):
        GrowingConfig(fps=0)


def test_the_file_may_appear_after_the_reader_is_made(tmp_path):
    path = tmp_path / "later.ts"
    w = BackgroundWriter.__new__(BackgroundWriter)  # made below, once the reader waits
    threading.Timer(0.3, lambda: (BackgroundWriter.__init__(w, path, seconds=2.0, fps=4.0, delay=0.0), w.start())).start()
    r = StreamReader(str(path), GrowingConfig(fps=1.0, idle_timeout_s=1.0, poll_s=0.02, open_timeout_s=5.0))
    assert [round(t, 2) for t, _ in r.frames()] == [0.5, 1.5]


def test_a_finished_mpegts_stream_gives_the_frames_of_the_fps_sampler(tmp_path):
    path = tmp_path / "done.ts"
    w = BackgroundWriter(path, seconds=5.0, fps=4.0, delay=0.0)
    w.run()
    got = list(StreamReader(str(path), GrowingConfig(fps=2.0, idle_timeout_s=0.2)).frames())
    done = load_video(str(path), SamplingConfig(sampler="fps", fps=2.0, min_frames=2, max_frames=160))
    assert [round(t, 4) for t, _ in got] == [round(float(t), 4) for t in done.timestamps]
    assert np.array_equal(np.stack([im for _, im in got]), done.frames)
