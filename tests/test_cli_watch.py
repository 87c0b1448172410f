"""``kangaroo watch`` over a file a background writer is still writing, and ``kangaroo ask`` on the result."""

import json
import subprocess
import sys
import threading
import time

from tests.model.test_session import two_objects
from tests.video.growing_media import BackgroundWriter


def test_watch_answers_from_stdin_as_the_file_grows_and_matches_ask(tmp_path):
    path = tmp_path / "live.ts"
    resume = threading.Event()
    w = BackgroundWriter(path, seconds=16, fps=4, delay=0.0, w=128, h=96, frame_fn=two_objects(), gate=(30, resume))
    w.start()
    q = "Which object is on screen at 10 seconds?"
    args = ["--greedy", "--max-new-tokens", "6"]
    p = subprocess.Popen([sys.executable, "-m", "kangaroo.cli", "watch", str(path), "--fps", "1", "--idle-timeout",
                          "2", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert json.loads(p.stdout.readline()) == {"ready": True}
        time.sleep(1.0)  # let the reader take what the writer has (up to 7.25 s)
        p.stdin.write("\n" + q + "\n")  # an empty line is skipped
        p.stdin.flush()
        early = json.loads(p.stdout.readline())
        assert set(early) == {"answer", "seen_until", "frames", "ttft_s"}
        assert early["frames"] <= 7 and early["seen_until"] <= 6.5 and early["ttft_s"] > 0
        resume.set()
        w.join()
        end = time.monotonic() + 120
        while True:  # ask until every frame is in (the idle timeout, 2 s, ends the stream)
            time.sleep(1.0)
            p.stdin.write(q + "\n")
            p.stdin.flush()
            late = json.loads(p.stdout.readline())
            if late["frames"] == 16 or time.monotonic() > end:
                break
        assert late["frames"] == 16 and late["seen_until"] == 15.5
        p.stdin.close()
        assert p.wait(60) == 0
    finally:
        resume.set()
        if p.poll() is None:
            p.kill()
    ask = subprocess.run([sys.executable, "-m", "kangaroo.cli", "ask", str(path), q, "--fps", "1", "--json", *args],
                         capture_output=True, text=True, timeout=300)
    assert ask.returncode == 0, ask.stderr
    assert json.loads(ask.stdout)["answer"] == late["answer"]


def test_watch_refuses_a_missing_source_cleanly(tmp_path):
    r = subprocess.run([sys.executable, "-m", "kangaroo.cli", "watch", str(tmp_path / "none.ts"), "--idle-timeout",
                        "0.2"], capture_output=True, text=True, timeout=300, input="")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error:") and "no such file" in r.stderr
    assert r.stdout == ""  # not ready: the source could not be opened
