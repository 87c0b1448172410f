"""The CLI's handling of hostile circumstances: a reader that goes away, absurd options."""

import os
import subprocess
import sys

import pytest


def run_into_closed_pipe(*args, timeout=300):
    """Run the CLI with stdout a real pipe whose reader has already closed it."""
    r, w = os.pipe()
    os.close(r)  # no reader: the first write to stdout raises EPIPE (deterministically)
    try:
        return subprocess.run([sys.executable, "-m", "kangaroo.cli", *args], stdout=w, stderr=subprocess.PIPE,
                              text=True, timeout=timeout)
    finally:
        os.close(w)


@pytest.fixture(scope="module")
def tiny_model_dir(tiny_chat_model, smol_tokenizer, tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_model")
    tiny_chat_model.save_pretrained(d)
    smol_tokenizer.save_pretrained(d)
    return str(d)


@pytest.mark.parametrize("cmd", ["probe", "probe_json", "frames", "ask", "synth", "curate_print_config"])
def test_stdout_closed_early_is_quiet(cmd, bikes, synth_video, tmp_path, request):
    args = {
        "probe": ["probe", bikes],
        "probe_json": ["probe", bikes, "--json"],
        "frames": ["frames", bikes, "--num", "2", "--out", str(tmp_path / "f")],
        "synth": ["synth", "--out", str(tmp_path / "s"), "--num-videos", "1", "--min-seconds", "2",
                  "--max-seconds", "2", "--quiet"],
        "curate_print_config": ["curate", "--print-config"],
    }.get(cmd)
    if cmd == "ask":
        model = request.getfixturevalue("tiny_model_dir")
        args = ["ask", synth_video, "What happens?", "--model", model, "--greedy", "--max-new-tokens", "4",
                "--frames", "2"]
    r = run_into_closed_pipe(*args)
    assert "Traceback" not in r.stderr and "BrokenPipeError" not in r.stderr, r.stderr
    assert r.returncode == 1 and "error" not in r.stderr.lower()
    if cmd != "ask":  # ask's model loading reports progress on stderr
        assert r.stderr == ""


def test_reader_that_closes_after_one_line(bikes):
    """``kangaroo probe X | head -1``, with a real reader."""
    p = subprocess.Popen([sys.executable, "-m", "kangaroo.cli", "probe", bikes], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    first = p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read()
    p.wait(timeout=120)
    assert first.startswith("path ") and bikes in first
    assert "Traceback" not in err and err == "" and p.returncode in (0, 1)


def test_ask_frames_beyond_the_cap_is_a_clean_error(synth_video, capsys):
    from kangaroo.cli import main
    from kangaroo.serve.engine import ServeConfig

    cap = ServeConfig.max_frames
    cases = ((["--frames", "100000"], "--frames"), (["--frames", "0"], "--frames"),
             (["--fps", "2", "--max-frames", str(cap + 1)], "--max-frames"))
    # the first as a process (its exit status and streams), the others in this one
    r = subprocess.run([sys.executable, "-m", "kangaroo.cli", "ask", synth_video, "What happens?", *cases[0][0]],
                       capture_output=True, text=True, timeout=300)
    results = [(r.returncode, r.stdout, r.stderr)]
    for flags, _ in cases[1:]:
        code = main(["ask", synth_video, "What happens?", *flags])
        out = capsys.readouterr()
        results.append((code, out.out, out.err))
    for (code, out, err), (_, word) in zip(results, cases):
        assert code == 2 and out == "", err
        assert err.startswith(f"error: {word} must be between 1 and {cap}") and err.count("\n") == 1
