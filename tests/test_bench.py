import json
import subprocess
import sys


def test_bench_decode_quick_json(tmp_path):
    """The decode benchmark runs end to end and reports a ratio per case (no timing asserted)."""
    r = subprocess.run([sys.executable, "-m", "kangaroo.cli", "bench", "decode", "--quick", "--repeats", "1", "--json",
                        "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert [c["frames"] for c in rep["cases"]] == [8, 16, 64, 160]
    assert all("ratio" in c and c["results"]["ours"]["peak_mb"] >= 0 for c in rep["cases"])
    assert "decode_all" in rep["methods"]
