"""``kangaroo bench data``'s parts on a small manifest (the 10k-1M run is recorded in BENCHMARKS.md)."""

import json

from kangaroo.train.bench_data import compare_formats, make_images, run_case, write_manifest
from kangaroo.train.records import Records


def test_bench_data_case_and_formats(tmp_path, monkeypatch):
    monkeypatch.setenv("KANGAROO_RECORDS_CACHE", str(tmp_path / "cache" / "records"))
    images = make_images(str(tmp_path / "images"))
    path = str(tmp_path / "m.jsonl")
    write_manifest(path, 25_003, images)  # more than one block of 10k lines
    recs = Records(path)
    assert len(recs) == 25_003 and recs[25_002]["id"] == 25_002 and recs[7]["image"] == images[7]
    case = run_case(path, 30)
    assert case["records"] == 25_003 and case["samples"] >= 30 and case["samples_per_s"] > 0 and case["peak_rss_mb"] > 0
    formats = {f["format"].split()[0]: f for f in compare_formats(path, str(tmp_path), reads=200)}
    assert set(formats) == {"jsonl+offsets", "parquet", "tar"}
    assert formats["jsonl+offsets"]["random_access"] and not formats["tar"]["random_access"]
    json.dumps(formats)
