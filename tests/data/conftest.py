import json
import os

import pytest


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="session")
def shots_video(tmp_path_factory):
    """moving | static | text | face | a 1 s moving tail, with hard cuts at known frames."""
    from kangaroo.synth.shots import Shot, write_shots

    d = tmp_path_factory.mktemp("shots")
    truth = write_shots(os.path.join(d, "shots.mp4"), [Shot("moving", 4), Shot("static", 4), Shot("text", 4),
                                                        Shot("face", 4), Shot("moving", 1.0, seed=3)])
    return truth


@pytest.fixture(scope="session")
def filter_config():
    from kangaroo.data import CurateConfig

    return CurateConfig(captioners=[])
