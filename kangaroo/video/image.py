"""Still images as one-frame videos (curriculum stage 1, image captioning, image_url requests)."""

from __future__ import annotations

import os
import warnings

import numpy as np

from .decode import Frames
from .errors import NotAVideoError, VideoTooLargeError
from .probe import VideoInfo, VideoLimits, check_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def jpeg_data_url(img: np.ndarray, max_side: int | None = None, quality: int = 90) -> str:
    """An RGB array as a ``data:image/jpeg;base64,...`` URL (thumbnails, image_url requests)."""
    import base64
    import io

    from PIL import Image

    im = Image.fromarray(img)
    if max_side:
        im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def is_image_file(path: str | os.PathLike) -> bool:
    """True when PIL recognises the file's content as an image (the extension is not trusted)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                return im.format is not None and getattr(im, "n_frames", 1) == 1
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return False


def load_image(path: str | os.PathLike, max_side: int | None = None, limits: VideoLimits = VideoLimits()) -> Frames:
    """An image as ``Frames`` with one frame at t=0. Oversized or unreadable images raise typed errors."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = check_path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > limits.max_pixels or max(w, h) > limits.max_side:
                    raise VideoTooLargeError(path, f"image {w}x{h} exceeds the limit ({limits.max_pixels} pixels)")
                if min(w, h) < limits.min_side:
                    raise VideoTooLargeError(path, f"absurd image dimensions {w}x{h}")
                im = ImageOps.exif_transpose(im).convert("RGB")
                if max_side and max(im.size) > max_side:
                    im.thumbnail((max_side, max_side), Image.BICUBIC)
                arr = np.asarray(im)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise VideoTooLargeError(path, f"image too large: {e}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise NotAVideoError(path, f"not a readable image ({e})") from None
    info = VideoInfo(path=path, duration=0.0, fps=0.0, variable_fps=False, num_frames=1, num_frames_exact=True,
                     width=int(arr.shape[1]), height=int(arr.shape[0]), rotation=0, codec="image", container="image",
                     has_audio=False, start_time=0.0, keyframes=None)
    return Frames(frames=arr[None], timestamps=np.zeros(1), requested=[0.0], info=info, stats={"mode": "image"})
