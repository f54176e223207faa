"""Image encoding for the prepared format: any accepted image payload as an `image` cell, and decode checks."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any


def _encode_png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # fast; still lossless
    return buf.getvalue()


def to_image_cell(payload: Any) -> tuple[dict, bool]:
    """(`{"bytes": ..., "path": ...}`, needs_check) for one image given as bytes, a file path, a PIL image,
    a uint8 array (HxW, HxWx1/3/4) or an undecoded datasets image dict. Arrays and PIL images are PNG-encoded
    (lossless); bytes and files are stored as they are and must be checked to decode."""
    from PIL import Image

    if isinstance(payload, (bytes, bytearray, memoryview)):
        return {"bytes": bytes(payload), "path": None}, True
    if isinstance(payload, (str, os.PathLike)):
        p = Path(payload)
        return {"bytes": p.read_bytes(), "path": p.name}, True
    if isinstance(payload, Image.Image):
        return {"bytes": _encode_png(payload), "path": None}, False
    if isinstance(payload, dict):
        if payload.get("bytes") is not None:
            path = payload.get("path")
            return {"bytes": bytes(payload["bytes"]), "path": os.path.basename(path) if path else None}, True
        if payload.get("path"):
            return to_image_cell(payload["path"])
        raise ValueError("image dict without bytes or path")
    import numpy as np
    if isinstance(payload, np.ndarray) or hasattr(payload, "__array__"):
        arr = np.asarray(payload)
        if arr.dtype != np.uint8:
            raise ValueError(f"image arrays must be uint8, not {arr.dtype}")
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
            raise ValueError(f"image arrays must be HxW or HxWx(1|3|4), not {tuple(arr.shape)}")
        return {"bytes": _encode_png(Image.fromarray(arr)), "path": None}, False
    raise ValueError(f"unsupported image type {type(payload).__name__}")


class NoKnownRange(ValueError):
    """An image whose pixel values have no known range (to_rgb8 cannot scale it to 8 bits)."""


def to_rgb8(img):
    """An 8-bit RGB image of a decoded PIL image, scaled by its bit depth (PIL's `convert('RGB')` clips instead:
    a 16-bit image turns white, a float one black). 16-bit grey (`I;16*`): value / 257; float (`F`) with values in
    [0, 1]: value x 255; every 8-bit mode: `convert('RGB')` (16-bit RGB PNGs are already 8-bit when PIL opens
    them). Raises NoKnownRange for what has no known range: a float image with values outside [0, 1], a 32-bit
    integer image."""
    import numpy as np
    from PIL import Image

    if img.mode.startswith("I;16"):
        grey = np.rint(np.asarray(img, dtype=np.float64) / 257.0)
    elif img.mode == "F":
        grey = np.asarray(img, dtype=np.float64)
        lo, hi = (float(grey.min()), float(grey.max())) if grey.size else (0.0, 0.0)
        if not (np.isfinite(grey).all() and lo >= 0.0 and hi <= 1.0):
            raise NoKnownRange(f"a float image with values in [{lo:.4g}, {hi:.4g}], not [0, 1]; save it as 8 or 16 "
                             "bits")
        grey = np.rint(grey * 255.0)
    elif img.mode in ("I", "I;32", "I;32B", "I;32L"):
        raise NoKnownRange("a 32-bit integer image: its value range is unknown; save it as 8 or 16 bits")
    else:
        return img.convert("RGB")
    return Image.fromarray(grey.astype(np.uint8), "L").convert("RGB")


def check_decodes(data: bytes) -> tuple[int, int]:
    """Fully decode encoded image bytes into 8-bit RGB (raises on a broken image or one `to_rgb8` refuses);
    returns (width, height)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        to_rgb8(im)
        return im.size
