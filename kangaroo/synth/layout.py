"""``kangaroo synth --layout kangaroo-8b``: a small synthetic data folder in exactly the files and
formats the Kangaroo-8B recipes read (recipes/kangaroo-8b, ``${KANGAROO_DATA}/...``).

    OUT/images/recaptioned.jsonl      llava, image-text pairs                 (stage 1)
    OUT/curated/manifest.jsonl        curation manifest, video captions       (stage 2)
    OUT/curated/high_quality.jsonl    curation manifest, the longer captions  (stage 3)
    OUT/instruct/captions.jsonl       llava, "Describe the video."            (stage 4)
    OUT/instruct/video_qa.jsonl       llava, QA (mostly multiple choice)      (stage 4)
    OUT/instruct/conversations.jsonl  llava, multi-round                      (stage 4)
    OUT/long/long_videos.jsonl        llava, videos longer than 64 s          (stage 5)
    OUT/long/short_resampled.jsonl    llava, short videos again               (stage 5)
    OUT/short/, OUT/long/media/       the videos and pictures (kangaroo.synth's generator)
    OUT/layout.json                   what was written, with counts

Media paths are relative to the file that names them (the readers' default root).
"""

from __future__ import annotations

import json
import os

from .dataset import generate_dataset
from .timeline import SynthConfig

FILES = ("images/recaptioned.jsonl", "curated/manifest.jsonl", "curated/high_quality.jsonl",
         "instruct/captions.jsonl", "instruct/video_qa.jsonl", "instruct/conversations.jsonl",
         "long/long_videos.jsonl", "long/short_resampled.jsonl")


def _load(folder: str, name: str) -> list[dict]:
    with open(os.path.join(folder, name), encoding="utf-8") as f:
        return json.load(f)


def _write(out: str, rel: str, records: list[dict]) -> int:
    path = os.path.join(out, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".part", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(path + ".part", path)
    return len(records)


def _rebase(rec: dict, media_dir: str, file_rel: str) -> dict:
    """A record's media path, relative to its generator folder, made relative to ``file_rel``'s folder."""
    out = dict(rec)
    for k in ("video", "image"):
        if k in out:
            target = os.path.join(media_dir, out[k])
            out[k] = os.path.relpath(target, os.path.dirname(file_rel))
    return out


def _llava(video: str, question: str, answer: str) -> dict:
    return {"video": video, "conversations": [{"from": "human", "value": "<video>\n" + question},
                                              {"from": "gpt", "value": answer}]}


def write_8b_layout(out: str, num_videos: int = 4, long_videos: int = 2, seed: int = 0, progress: bool = True,
                    base: SynthConfig | None = None) -> dict:
    """Generate short and long synthetic videos and write the 8B recipes' data files from them."""
    if num_videos < 1 or long_videos < 1:
        raise ValueError("the kangaroo-8b layout needs at least one short and one long video")
    out = os.fspath(out)
    base = base or SynthConfig(width=224, height=168)
    short_dir, long_dir = "short", os.path.join("long", "media")
    generate_dataset(os.path.join(out, short_dir), num_videos, 8.0, 20.0, seed=seed, base=base, progress=progress,
                     images_per_video=2)
    generate_dataset(os.path.join(out, long_dir), long_videos, 66.0, 80.0, seed=seed + 1,
                     base=SynthConfig(**{**base.to_dict(), "fps": 2.0}), progress=progress)
    s = {n: _load(os.path.join(out, short_dir), f"{n}.json") for n in
         ("images", "captions", "mcqa", "openqa", "conversations", "mc_conversations")}
    lg = {n: _load(os.path.join(out, long_dir), f"{n}.json") for n in ("captions", "conversations")}

    def rebased(recs, media, rel):
        return [_rebase(r, media, rel) for r in recs]

    def manifest(caps, media, rel):  # kangaroo curate's rows: a clip of a video with its caption
        rows = []
        for c in rebased(caps, media, rel):
            rows.append({"kind": "video", "video": c["video"], "start": 0.0, "end": float(c["duration"]),
                         "caption": c["caption"]})
        return rows

    longest = sorted(s["captions"], key=lambda c: -len(c["caption"]))[: max(1, len(s["captions"]) // 2)]
    files = {
        FILES[0]: rebased(s["images"], short_dir, FILES[0]),
        FILES[1]: manifest(s["captions"], short_dir, FILES[1]),
        FILES[2]: manifest(longest, short_dir, FILES[2]) + manifest(lg["captions"], long_dir, FILES[2]),
        FILES[3]: [_llava(c["video"], "Describe the video.", c["caption"])
                   for c in rebased(s["captions"], short_dir, FILES[3])],
        FILES[4]: rebased(s["mc_conversations"], short_dir, FILES[4])
        + [_llava(q["video"], q["question"], q["answer"]) for q in rebased(s["openqa"], short_dir, FILES[4])
           if q["family"] != "caption"][: max(1, len(s["openqa"]) // 4)],
        FILES[5]: rebased(s["conversations"], short_dir, FILES[5]),
        FILES[6]: rebased(lg["conversations"], long_dir, FILES[6])
        + [_llava(c["video"], "Describe the video.", c["caption"]) for c in rebased(lg["captions"], long_dir, FILES[6])],
        FILES[7]: rebased(s["conversations"], short_dir, FILES[7]),
    }
    counts = {rel: _write(out, rel, recs) for rel, recs in files.items()}
    layout = {"layout": "kangaroo-8b", "seed": seed, "short_videos": num_videos, "long_videos": long_videos,
              "files": counts, "recipes": "recipes/kangaroo-8b (KANGAROO_DATA=this folder)"}
    with open(os.path.join(out, "layout.json"), "w") as f:
        json.dump(layout, f, indent=1)
    return layout
