"""Frame-sampling filters (curation stages 3-5), registered by name, Data-Juicer style.

A filter scores sampled frames (``score_frame``), reduces the frame scores of a clip to
one clip score (``aggregate``) and passes the clip when ``min <= score <= max``. Scoring
and deciding are separate, and every score is kept in the output, so a user can
re-threshold without recomputing.

- ``text_coverage``: the area fraction covered by text boxes from PP-OCR's text detector,
  each box confirmed by PP-OCR's recogniser (both shipped in the rapidocr wheel).
- ``face_coverage``: the area fraction covered by faces from OpenCV's Haar cascades (their
  weights ship in opencv-python-headless).
- ``motion``: mean optical-flow magnitude (OpenCV DIS) between a sampled frame and the
  next decoded one, in percent of the frame diagonal per second (so independent of the
  frame rate and the analysis resolution).

Frames arrive as RGB uint8 already scaled so that their longer side is ``side``.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..registry import Registry
from .config import FilterConfig

FILTERS: Registry[type] = Registry("filter")


class FrameFilter:
    needs_next = False  # True: score_frame also receives the next decoded frame

    def __init__(self, cfg: FilterConfig):
        self.cfg = cfg
        unknown = set(cfg.params) - set(self.default_params())
        if unknown:
            raise ValueError(f"filter {cfg.name}: unknown params {sorted(unknown)}; known: {sorted(self.default_params())}")
        self.params = {**self.default_params(), **cfg.params}

    @staticmethod
    def default_params() -> dict:
        return {}

    def score_frame(self, frame: np.ndarray, nxt: np.ndarray | None = None, dt: float | None = None) -> float:
        raise NotImplementedError

    def aggregate(self, values: Sequence[float]) -> float | None:
        if not len(values):
            return None
        how = self.params.get("reduce", "mean")
        return float(np.max(values) if how == "max" else np.median(values) if how == "median" else np.mean(values))

    def keep(self, score: float | None) -> bool:
        if score is None:
            return True  # nothing sampled (cannot happen for a clip >= one frame): no evidence to drop
        lo, hi = self.cfg.min, self.cfg.max
        return (lo is None or score >= lo) and (hi is None or score <= hi)


def _box_area_fraction(boxes, h: int, w: int) -> float:
    """Union area of polygons/rectangles as a fraction of the frame (overlaps counted once)."""
    import cv2

    if boxes is None or len(boxes) == 0:
        return 0.0
    mask = np.zeros((h, w), np.uint8)
    for b in boxes:
        pts = np.asarray(b, dtype=np.float32).reshape(-1, 2)
        if len(pts) == 2:  # (x0, y0), (x1, y1)
            pts = np.array([pts[0], [pts[1][0], pts[0][1]], pts[1], [pts[0][0], pts[1][1]]], np.float32)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return float(mask.mean())


@FILTERS.register("text_coverage")
class TextCoverage(FrameFilter):
    """PP-OCR text detection, each candidate box confirmed by PP-OCR text recognition (both the
    ONNX models that ship in the rapidocr wheel, run with ONNX Runtime).

    The detector's probability map is thresholded (``thresh``), its connected regions with a mean
    probability >= ``box_thresh`` are grown by DB's unclip distance (area * ``unclip`` / perimeter),
    dropped when taller than ``max_height`` of the frame (a text line is not a blob), and kept when
    the recogniser reads at least ``min_chars`` characters with confidence >= ``text_score``. Measured on
    our calibration frames: RapidOCR's own detection pipeline (v3.10, PP-OCRv6 small) returned
    whole-frame boxes on frames without text, and the raw detector fires on close-up faces; the
    recognition check removes both (see kangaroo/data/README.md)."""

    @staticmethod
    def default_params() -> dict:
        return {"reduce": "mean", "thresh": 0.3, "box_thresh": 0.6, "unclip": 1.5, "min_box": 0.002,
                "text_score": 0.5, "min_chars": 2, "max_height": 0.3, "verify": True, "threads": 1}

    def __init__(self, cfg: FilterConfig):
        super().__init__(cfg)
        import glob
        import importlib.util

        import onnxruntime as ort

        spec = importlib.util.find_spec("rapidocr")
        if spec is None:
            raise RuntimeError("text_coverage needs the rapidocr package (its wheel ships the PP-OCR models)")
        models = os.path.join(spec.submodule_search_locations[0], "models")
        det, rec = sorted(glob.glob(os.path.join(models, "*det*.onnx"))), sorted(glob.glob(os.path.join(models, "*rec*.onnx")))
        if not det or not rec:
            raise RuntimeError(f"no PP-OCR detection/recognition model in {models} (reinstall rapidocr)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(self.params["threads"])
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.det = ort.InferenceSession(det[-1], opts, providers=["CPUExecutionProvider"])
        self.rec = ort.InferenceSession(rec[-1], opts, providers=["CPUExecutionProvider"])
        self.det_input, self.rec_input = self.det.get_inputs()[0].name, self.rec.get_inputs()[0].name
        self.mean = np.array([0.485, 0.456, 0.406], np.float32)
        self.std = np.array([0.229, 0.224, 0.225], np.float32)

    def read(self, crops: list[np.ndarray]) -> list[tuple[int, float]]:
        """(characters read, mean confidence) per RGB crop: PP-OCR recognition in one batch (crops
        resized to height 48 and right-padded to the widest), greedy CTC decoding. Only the count
        and the confidence matter here, so no character dictionary is needed."""
        import cv2

        if not crops:
            return []
        widths = [int(min(48 * 32, max(16, np.ceil(48 * c.shape[1] / max(c.shape[0], 1) / 8) * 8))) for c in crops]
        batch = np.zeros((len(crops), 3, 48, max(widths)), np.float32)
        for k, (c, w) in enumerate(zip(crops, widths)):
            x = cv2.resize(c[:, :, ::-1], (w, 48), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
            batch[k, :, :, :w] = ((x - 0.5) / 0.5).transpose(2, 0, 1)
        probs = self.rec.run(None, {self.rec_input: batch})[0]  # [N, T, classes]
        out = []
        for k, w in enumerate(widths):
            p = probs[k, : max(1, int(np.ceil(probs.shape[1] * w / batch.shape[3])))]  # this crop's time steps
            idx, conf = p.argmax(1), p.max(1)
            keep = [c for t, (i, c) in enumerate(zip(idx, conf)) if i != 0 and (t == 0 or idx[t - 1] != i)]  # 0 = blank
            out.append((len(keep), float(np.mean(keep)) if keep else 0.0))
        return out

    def boxes(self, frame: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Text boxes (x0, y0, x1, y1) in ``frame`` coordinates."""
        import cv2

        h, w = frame.shape[:2]
        W, H = max(32, int(round(w / 32)) * 32), max(32, int(round(h / 32)) * 32)
        x = cv2.resize(frame, (W, H), interpolation=cv2.INTER_LINEAR)[:, :, ::-1].astype(np.float32) / 255.0
        x = ((x - self.mean) / self.std).transpose(2, 0, 1)[None]
        prob = self.det.run(None, {self.det_input: x})[0][0, 0]
        mask = (prob > self.params["thresh"]).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
        out = []
        sx, sy = w / W, h / H
        for i in range(1, n):
            x0, y0, bw, bh, area = (int(v) for v in stats[i])
            if area < self.params["min_box"] * W * H:
                continue  # too small to matter for coverage: not worth reading
            region = labels[y0:y0 + bh, x0:x0 + bw] == i
            if float(prob[y0:y0 + bh, x0:x0 + bw][region].mean()) < self.params["box_thresh"]:
                continue
            d = area * self.params["unclip"] / (2.0 * (bw + bh))
            box = (max(0, int((x0 - d) * sx)), max(0, int((y0 - d) * sy)),
                   min(w, int(np.ceil((x0 + bw + d) * sx))), min(h, int(np.ceil((y0 + bh + d) * sy))))
            if box[2] - box[0] < 4 or box[3] - box[1] < 4 or bh * sy > self.params["max_height"] * h:
                continue  # a text line is not taller than max_height of the frame: a blob, not text
            out.append(box)
        if self.params["verify"] and out:
            reads = self.read([frame[b[1]:b[3], b[0]:b[2]] for b in out])
            out = [b for b, (chars, score) in zip(out, reads)
                   if score >= self.params["text_score"] and chars >= self.params["min_chars"]]
        return out

    def score_frame(self, frame, nxt=None, dt=None) -> float:
        h, w = frame.shape[:2]
        return _box_area_fraction([[(b[0], b[1]), (b[2], b[3])] for b in self.boxes(frame)], h, w)


@FILTERS.register("face_coverage")
class FaceCoverage(FrameFilter):
    @staticmethod
    def default_params() -> dict:
        return {"reduce": "mean", "detector": "haar", "scale_factor": 1.2, "min_neighbors": 7,
                "min_size": 0.15, "profile": False}

    def __init__(self, cfg: FilterConfig):
        super().__init__(cfg)
        import cv2

        if self.params["detector"] != "haar":
            raise ValueError(f"face_coverage: detector {self.params['detector']!r} is not available "
                             "(only 'haar': OpenCV's cascades ship with opencv-python-headless)")
        root = cv2.data.haarcascades
        self.cascades = [cv2.CascadeClassifier(root + "haarcascade_frontalface_default.xml")]
        if self.params["profile"]:
            self.cascades.append(cv2.CascadeClassifier(root + "haarcascade_profileface.xml"))
        if any(c.empty() for c in self.cascades):
            raise RuntimeError(f"OpenCV's Haar cascades are missing from {root} (opencv-python-headless<5 ships them)")

    def score_frame(self, frame, nxt=None, dt=None) -> float:
        import cv2

        gray = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
        m = max(8, int(self.params["min_size"] * min(gray.shape)))
        boxes = []
        for c in self.cascades:
            for x, y, w, h in c.detectMultiScale(gray, float(self.params["scale_factor"]),
                                                 int(self.params["min_neighbors"]), minSize=(m, m)):
                boxes.append([(x, y), (x + w, y + h)])
        return _box_area_fraction(boxes, gray.shape[0], gray.shape[1])


@FILTERS.register("motion")
class Motion(FrameFilter):
    needs_next = True

    @staticmethod
    def default_params() -> dict:
        return {"reduce": "median", "preset": "ultrafast"}

    def __init__(self, cfg: FilterConfig):
        super().__init__(cfg)
        import cv2

        presets = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                   "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
        if self.params["preset"] not in presets:
            raise ValueError(f"motion: preset must be one of {sorted(presets)}")
        self.dis = cv2.DISOpticalFlow_create(presets[self.params["preset"]])

    def score_frame(self, frame, nxt=None, dt=None) -> float:
        import cv2

        if nxt is None or not dt or dt <= 0:
            return float("nan")  # the clip's last frame has no successor: no motion evidence
        a = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        b = cv2.cvtColor(nxt, cv2.COLOR_RGB2GRAY)
        flow = self.dis.calc(a, b, None)
        mag = float(np.sqrt((flow ** 2).sum(axis=2)).mean())
        diag = float(np.hypot(*a.shape))
        return 100.0 * mag / diag / dt

    def aggregate(self, values):
        vals = [v for v in values if v == v]  # drop NaN
        return super().aggregate(vals)


def build_filters(cfgs: list[FilterConfig]) -> list[FrameFilter]:
    return [FILTERS.get(c.name)(c) for c in cfgs]
