"""The per-input pipeline: one video (or image) in, its manifest rows and reject rows out.

``Pipeline(config, out_dir).process(item)`` runs the stages in order and never raises
for a bad input: every failure becomes a reject row with the stage, a reason code and a
readable detail. Each executor builds one ``Pipeline`` per worker (models load once) and
calls ``process`` for each input it is given.

Stages: probe -> decode pass (scene cuts + filter scores) -> clips (length bounds) ->
filters -> key frames -> frame captions -> fused caption -> refinement -> category.

Captioning is the expensive part, so each captioned clip's outcome is also kept in
``DIR/clips/<clip id>.json``: an input interrupted half-way is analysed again (cheap) on
the next run, and its finished clips are not captioned twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time

import numpy as np

from ..video.decode import DecodeOptions, decode_frames
from ..video.errors import EmptyVideoError, NotAVideoError, VideoError
from ..video.frames import FRAMES_CONTAINER
from ..video.image import IMAGE_EXTENSIONS, is_image_file, load_image
from ..video.probe import VideoLimits, probe
from ..video.sampling import midpoints
from .analyze import analyze
from .captions import CAPTIONERS, FUSERS, CaptionError
from .clips import make_clips, score_clip
from .config import CurateConfig
from .filters import build_filters
from .refine import categorize, load_labels, refine_caption


def source_id(source: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.splitext(os.path.basename(source))[0])[:40] or "input"
    return f"{stem}-{hashlib.sha1(source.encode()).hexdigest()[:8]}"


class Pipeline:
    def __init__(self, config: CurateConfig, out_dir: str, threads: int = 1):
        self.cfg = config
        self.out = os.path.abspath(out_dir)
        self.threads = threads
        self.filters = build_filters(config.filters)
        self.labels = load_labels(config.category.labels) if config.category.labels else {}
        self._captioners = None
        self._fuser = None

    # ---- models, loaded on first use ----------------------------------------------------------
    @property
    def captioners(self):
        if self._captioners is None:
            self._captioners = [CAPTIONERS.get(c.name)(c) for c in self.cfg.captioners]
        return self._captioners

    @property
    def fuser(self):
        if self._fuser is None:
            self._fuser = FUSERS.get(self.cfg.fusion.name)(self.cfg.fusion)
        return self._fuser

    # ---- entry point ---------------------------------------------------------------------------
    def process(self, item: dict) -> dict:
        source = item["source"]
        res = {"source": source, "index": item.get("index", 0), "kind": "video", "clips": [], "rejects": [],
               "seconds": {}, "video_seconds": 0.0}
        t0 = time.perf_counter()
        try:
            if source.lower().endswith(IMAGE_EXTENSIONS) or (os.path.isfile(source) and is_image_file(source)):
                res["kind"] = "image"
                self._image(item, res)
            else:
                self._video(item, res, time.monotonic() + self.cfg.timeout_s)
        except VideoError as e:
            res["clips"] = []
            res["rejects"] = [self._reject(item, res.get("stage", "probe"), e.reason, e.detail)]
        except TimeoutError:
            res["clips"] = []
            res["rejects"] = [self._reject(item, res.get("stage", "?"), "timeout",
                                           f"the input took longer than timeout_s={self.cfg.timeout_s}")]
        except Exception as e:  # a bug or an unforeseen input must not stop the run: keep the reason
            res["clips"] = []
            res["rejects"] = [self._reject(item, res.get("stage", "?"), "error", f"{type(e).__name__}: {e}")]
        res["seconds"]["total"] = round(time.perf_counter() - t0, 4)
        res.pop("stage", None)
        return res

    def _reject(self, item, stage, reason, detail, **extra) -> dict:
        """A reject row; ``level`` says whether a whole input, one clip (or shot) or an image was rejected."""
        level = "clip" if "start_frame" in extra else "image" if extra.get("kind") == "image" else "input"
        return {"source": item["source"], "level": level, "stage": stage, "reason": reason, "detail": detail, **extra}

    def _timed(self, res, stage, fn, *a, **kw):
        res["stage"] = stage
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            res["seconds"][stage] = round(res["seconds"].get(stage, 0.0) + time.perf_counter() - t, 4)

    # ---- videos -----------------------------------------------------------------------------------
    def _video(self, item: dict, res: dict, deadline: float) -> None:
        source = item["source"]
        info = self._timed(res, "probe", probe, source, VideoLimits(max_duration_s=self.cfg.max_duration_s))
        if info.container == FRAMES_CONTAINER:
            raise NotAVideoError(source, f"a folder of {info.num_frames} frames: curate reads video files "
                                         "(encode the frames into one first)")
        meta = info.to_dict()
        res["info"] = {k: meta[k] for k in ("duration", "fps", "width", "height", "codec", "num_frames")}
        res["stage"] = "analyze"
        a = analyze(info, self.cfg.scenes, self.filters, deadline=deadline, threads=self.threads)
        for k, v in a.seconds.items():
            res["seconds"][k] = round(v, 4)
        res["video_seconds"] = round(a.end_time(info.fps), 3) if a.pts else 0.0
        res["frames_decoded"] = a.num_frames
        if not a.pts:
            raise EmptyVideoError(source, "no frame could be decoded")
        short = info.duration - res["video_seconds"]
        if short > max(2.0, 0.1 * info.duration):
            res["rejects"] = [self._reject(item, "analyze", "truncated",
                                           f"frames stop at {res['video_seconds']:.2f}s of a {info.duration:.2f}s "
                                           "stream (truncated or corrupt file)")]
            return
        sid = source_id(source)
        clips, dropped = make_clips(a, self.cfg.scenes, info.fps)
        for d in dropped:
            res["rejects"].append(self._reject(item, "scenes", d.pop("reason"), d.pop("detail"), **d))
        passing = []
        for k, clip in enumerate(clips):
            clip = {"id": f"{sid}-{k:03d}", "kind": "video", "source": source, "video": source, **clip}
            clip["scores"], failed = score_clip(clip, a, self.filters)
            if failed:
                f = next(x for x in self.cfg.filters if x.name == failed[0])
                bound = f"min={f.min}" if f.min is not None and clip["scores"][f.name] < f.min else f"max={f.max}"
                res["rejects"].append(self._reject(item, "filter", failed[0],
                                                   f"{failed[0]}={clip['scores'][failed[0]]} outside {bound}",
                                                   failed=failed, **clip))
            else:
                passing.append(clip)
        done = {c["id"]: self._cached(c["id"]) for c in passing}  # clips finished before an interruption
        todo = [c for c in passing if done[c["id"]] is None]
        kf = self._timed(res, "keyframes", self._keyframes, info, todo, deadline) if todo else []
        images = dict(zip([c["id"] for c in todo], kf))
        for clip in passing:
            if done[clip["id"]] is not None:
                cached = done[clip["id"]]
                (res["clips"] if "row" in cached else res["rejects"]).append(cached.get("row") or cached["reject"])
                continue
            if time.monotonic() > deadline:
                res["rejects"].append(self._reject(item, "caption", "timeout",
                                                   f"the input's time limit ({self.cfg.timeout_s}s) ran out", **clip))
                continue
            n_rej = len(res["rejects"])
            row = self._describe(item, res, clip, images[clip["id"]])
            if row is not None:
                res["clips"].append(row)
                self._cache(clip["id"], {"row": row})
            elif res["rejects"][n_rej]["reason"] != "caption_error":  # an endpoint failure is retried next run
                self._cache(clip["id"], {"reject": res["rejects"][n_rej]})

    # ---- per-clip results: a rerun after an interruption skips finished clips ------------------
    def _cache_path(self, clip_id: str) -> str:
        return os.path.join(self.out, "clips", clip_id + ".json")

    def _cached(self, clip_id: str) -> dict | None:
        try:
            with open(self._cache_path(clip_id), encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _cache(self, clip_id: str, value: dict) -> None:
        if not self.cfg.captioners:
            return  # nothing expensive to keep: the filters are recomputed in a fraction of the time
        path = self._cache_path(clip_id)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".part", "w", encoding="utf-8") as f:
            json.dump(value, f)  # ASCII escapes: any file name (even not valid UTF-8) round-trips
        os.replace(path + ".part", path)

    def _keyframes(self, info, clips: list[dict], deadline: float) -> list[list[np.ndarray]]:
        n, side = self.cfg.keyframes.count, self.cfg.keyframes.side
        times = [t for c in clips for t in midpoints(c["start"], c["end"], n)]
        left = max(1.0, deadline - time.monotonic())
        got = decode_frames(info.path, times, DecodeOptions(max_side=side, timeout_s=left, threads=self.threads),
                            info=info)
        out = []
        for i, c in enumerate(clips):
            imgs = list(got.frames[i * n:(i + 1) * n])
            c["keyframe_times"] = [round(float(t), 4) for t in got.timestamps[i * n:(i + 1) * n]]
            c["keyframes"] = self._save_keyframes(c["id"], imgs)
            out.append(imgs)
        return out

    def _save_keyframes(self, clip_id: str, imgs: list[np.ndarray]) -> list[str]:
        from PIL import Image

        d = os.path.join(self.out, "keyframes", clip_id)
        os.makedirs(d, exist_ok=True)
        paths = []
        for k, img in enumerate(imgs):
            rel = os.path.join("keyframes", clip_id, f"{k}.jpg")
            p = os.path.join(self.out, rel)
            tmp = p + ".part"
            Image.fromarray(img).save(tmp, format="JPEG", quality=90)
            os.replace(tmp, p)
            paths.append(rel)
        return paths

    # ---- captions, shared by videos and images ---------------------------------------------------
    def _describe(self, item: dict, res: dict, row: dict, images: list[np.ndarray]) -> dict | None:
        """Caption, fuse, refine and categorize one clip or image; None when it became a reject."""
        if self.cfg.captioners:
            try:
                caps = {}
                for cap in self._timed(res, "caption_load", lambda: self.captioners):
                    caps[cap.label] = self._timed(res, "caption", cap.caption, images)
                row["frame_captions"] = caps
                if len(caps) == 1 and len(images) == 1:
                    raw = next(iter(caps.values()))[0]  # one caption of one image: nothing to fuse
                else:
                    fuser = self._timed(res, "fuse_load", lambda: self.fuser)
                    raw = self._timed(res, "fuse", fuser.fuse, caps)
            except CaptionError as e:
                res["rejects"].append(self._reject(item, "caption", "caption_error", str(e), **row))
                return None
            row["raw_caption"] = raw
            res["stage"] = "refine"
            row["caption"], row["refine"] = refine_caption(raw, self.cfg.refine)
            if not row["caption"]:
                res["rejects"].append(self._reject(item, "refine", row["refine"]["reason"],
                                                   f"caption rejected: {raw[:120]!r}", **row))
                return None
        else:
            row["caption"] = item.get("caption")  # filter-only run: keep a caption the input came with
        row["category"], row["category_from"] = categorize({**row, "label": item.get("label")}, self.cfg.category,
                                                           self.labels)
        return row

    # ---- images (curriculum stage 1 data) ---------------------------------------------------------
    def _image(self, item: dict, res: dict) -> None:
        source = item["source"]
        frames = self._timed(res, "probe", load_image, source, self.cfg.keyframes.side)
        row = {"id": source_id(source), "kind": "image", "source": source, "image": source,
               "width": frames.info.width, "height": frames.info.height}
        if item.get("caption"):
            row["source_caption"] = item["caption"]
        out = self._describe(item, res, row, [frames.frames[0]])
        if out is not None:
            res["clips"].append(out)

