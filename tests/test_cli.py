import json
import os
import subprocess
import sys


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "kangaroo.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_probe_json(bikes):
    r = run("probe", bikes, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["num_frames"] == 250
    r = run("probe", bikes)
    assert "duration" in r.stdout and "640" in r.stdout


def test_frames_writes_pngs(bunny, tmp_path):
    r = run("frames", bunny, "--sampler", "uniform", "--num", "16", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["num_frames"] == 16 and len(s["files"]) == 16
    assert sorted(os.listdir(tmp_path)) == sorted(s["files"])
    assert s["files"][0].startswith("frame_") and s["files"][0].endswith("s.png")


def test_frames_fps_sampler_on_synth(synth_video, tmp_path):
    r = run("frames", synth_video, "--sampler", "fps", "--fps", "0.5", "--out", str(tmp_path), "--max-side", "160")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["width"] == 160


def test_synth_cli(tmp_path):
    r = run("synth", "--out", str(tmp_path), "--num-videos", "2", "--min-seconds", "3", "--max-seconds", "5",
            "--seed", "3", "--quiet")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["counts"]["videos"] == 2
    assert len(os.listdir(tmp_path / "videos")) == 2


def test_bad_option_is_clean_error(bikes, tmp_path):
    r = run("frames", bikes, "--num", "0", "--out", str(tmp_path))
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr


def test_serve_session_flags_reach_the_config(monkeypatch, capsys):
    import kangaroo.serve as serve_pkg
    from kangaroo.cli import main
    from kangaroo.serve import ServeConfig

    got = []
    monkeypatch.setattr(serve_pkg, "serve", got.append)  # the config it would serve with, no server started
    assert main(["serve", "--max-sessions", "2", "--session-idle-s", "30"]) == 0
    assert (got[0].max_sessions, got[0].session_idle_s) == (2, 30.0)
    assert main(["serve"]) == 0
    assert (got[1].max_sessions, got[1].session_idle_s) == (ServeConfig.max_sessions, ServeConfig.session_idle_s)
    assert main(["serve", "--max-sessions", "0"]) == 2 and len(got) == 2
    assert "error: max_sessions (--max-sessions) must be at least 1" in capsys.readouterr().err
    assert main(["serve", "--session-idle-s", "0"]) == 2
    assert "--session-idle-s" in capsys.readouterr().err
