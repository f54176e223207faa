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


def check_decodes(data: bytes) -> tuple[int, int]:
    """Fully decode encoded image bytes (raises on a broken image); returns (width, height)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.size
