"""Glyphs: an offline image set with real labels and up to 200 classes, drawn here. Class k is one character
(digits, Latin, Greek, Cyrillic letters and symbols, the first `num_classes` of `CHARACTERS`), rendered in grey on
grey with one of matplotlib's packaged DejaVu fonts (sans, serif, mono; regular, bold, italic) at a random size,
rotation and position, plus pixel noise. The same `seed` draws the same images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import MtilError

CHARACTERS = ("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghijkmnqrtuy"  # no c o p s v w x z: their capitals
              "ΓΔΘΛΞΠΣΦΨΩαβγδεζηθκλμξπρστφχψω"
              "БГДЖЗИЙЛПУФЦЧШЩЪЫЬЭЮЯбвгджзийклмнптфцчшщъыьэюя"
              "+×÷=≠<>≤≥∞∑∫√∂∇∈∩∪⊂⊃∀∃¬∧∨⊕⊗→←↑↓↔⇒♠♣♥♦#$%&@§¶©®?!~*¥€£¢♪♫☀⌘∆◊○●□■△▲▽▼◇◆ÆØÞßŁ¿")
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSerif.ttf",
         "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf")


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def render(num_classes: int, per_class: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [num_classes * per_class, 1, size, size] (class-major order) and int64 labels; the same for
    every seed of a study (fonts and sizes drawn from a fixed generator)."""
    if not 1 <= num_classes <= len(CHARACTERS):
        raise MtilError(f"the glyphs source has {len(CHARACTERS)} classes; data.num_classes={num_classes} is too many")
    rng = np.random.default_rng([0, 7])
    big = 2 * size  # draw at twice the size, then downsample (anti-aliasing)
    fonts = {}
    images = np.empty((num_classes * per_class, 1, size, size), dtype=np.uint8)
    for k in range(num_classes):
        for j in range(per_class):
            name, px = FONTS[rng.integers(len(FONTS))], int(rng.uniform(0.45, 0.8) * big)
            if (name, px) not in fonts:
                fonts[(name, px)] = ImageFont.truetype(str(_font_dir() / name), px)
            fg, bg = (int(v) for v in rng.choice(np.r_[0:90, 165:256], 2, replace=False))
            if abs(fg - bg) < 70:
                fg = 255 - bg
            img = Image.new("L", (big, big), bg)
            ImageDraw.Draw(img).text((big / 2 + rng.uniform(-0.12, 0.12) * big, big / 2 + rng.uniform(-0.12, 0.12) * big),
                                     CHARACTERS[k], fill=fg, font=fonts[(name, px)], anchor="mm")
            img = img.rotate(rng.uniform(-20, 20), resample=Image.BILINEAR, fillcolor=bg).resize((size, size),
                                                                                              Image.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 12, (size, size))
            images[k * per_class + j, 0] = arr.clip(0, 255).round().astype(np.uint8)
    return images, np.repeat(np.arange(num_classes, dtype=np.int64), per_class)
