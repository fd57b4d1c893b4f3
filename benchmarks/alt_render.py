"""A second ShapesWorld renderer, written from docs/SHAPESWORLD.md alone, to test the judge on drawings
it was not built from.

It shares nothing with `illume_core.world.scenes.draw_object`: every shape is an analytic region in
continuous coordinates, and each image draws with a convention picked at random, so the judge
meets many rasterizations rather than a second fixed one:

- geometry: where the box (x, y, s) lies in continuous space (pixel i covers [i, i + 1)):
  "corners" [x, x + s] (vertices on pixel corners, the box ends at x1), "centres"
  [x + 0.5, x + s - 0.5] (vertices on pixel centres, the box ends at x1 - 1), "inclusive"
  [x + 0.5, x + s + 0.5] (the box's end pixel included once more), plus a sub-pixel jitter;
- raster: PIL's polygon/ellipse fill (float or integer-rounded vertices), a pixel-centre
  inside test, or supersampling 2-8x then downscaling with PIL's BOX, BILINEAR, HAMMING,
  BICUBIC or LANCZOS filter (soft images; clean ones use BOX or LANCZOS, cut at half coverage);
- cross arms: exactly a third of the side, or a whole number of pixels (rounded or floored).

Styles: "clean" (hard edges, reference colours), "soft" (antialiased, slight Gaussian blur,
Gaussian noise sigma 10-20) and "distractor" (clean plus one contract object of a shape the
prompt does not name). `near_miss` draws blobs that are none of the five shapes (a square with
a corner cut, a circle squashed 30%, a cross with short arms) for the false-accept rate.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from illume_core.world.scenes import BACKGROUND, COLORS, Obj, Scene

FILTERS = {
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class Convention:
    """How one image is rasterized (see the module docstring)."""

    geometry: str  # corners | centres | inclusive
    jitter: tuple[float, float]  # sub-pixel shift (dx, dy) of every shape
    raster: str  # pil | pil_int | sample | super
    factor: int  # supersampling factor (raster "super")
    filt: str  # downscaling filter (raster "super")
    arms: str  # exact | round | floor: the cross's arm width

    @staticmethod
    def draw(rng: random.Random, soft: bool = False) -> Convention:
        raster = "super" if soft else rng.choice(["pil", "pil_int", "sample", "super"])
        j = rng.choice([0.0, 0.0, 0.25, -0.25, 0.5])
        return Convention(
            geometry=rng.choice(["corners", "centres", "inclusive"]),
            jitter=(j * rng.choice([0, 1]), j * rng.choice([0, 1])),
            raster=raster,
            factor=rng.choice([2, 3, 4, 8]),
            # a clean image is cut at half coverage: after a wide filter (bilinear, bicubic, hamming
            # stretch with the scale) the cut rounds a small triangle's corners off, which no
            # renderer of hard-edged shapes does; soft images use every filter
            filt=rng.choice(list(FILTERS) if soft else ["box", "lanczos"]),
            arms=rng.choice(["exact", "round", "floor"]),
        )


def extent(o: Obj, conv: Convention) -> tuple[float, float, float]:
    """Continuous (left, top, side) of an object's shape under a convention."""
    x, y, s = float(o.x), float(o.y), float(o.s)
    if conv.geometry == "centres":
        x, y, s = x + 0.5, y + 0.5, s - 1.0
    elif conv.geometry == "inclusive":
        x, y = x + 0.5, y + 0.5
    return x + conv.jitter[0], y + conv.jitter[1], s


def arm_width(side: float, conv: Convention) -> float:
    a = side / 3
    if conv.arms == "round":
        return float(max(1, round(a)))
    if conv.arms == "floor":
        return float(max(1, math.floor(a)))
    return a


def inside(shape: str, px: np.ndarray, py: np.ndarray, left: float, top: float, side: float,
           conv: Convention) -> np.ndarray:  # fmt: skip
    """Boolean inside test of a shape (or a near miss) at continuous points px, py."""
    r = side / 2
    cx, cy = left + r, top + r
    dx, dy = px - cx, py - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    if shape == "triangle":  # apex up at the top edge's midpoint, base on the bottom edge
        u = (py - top) / side
        return (u >= 0) & (u <= 1) & (np.abs(dx) <= u * r)
    if shape == "cross":
        h = arm_width(side, conv) / 2
        box = (np.abs(dx) <= r) & (np.abs(dy) <= r)
        return box & ((np.abs(dx) <= h) | (np.abs(dy) <= h))
    # near misses: what a person would not call any of the five shapes
    if shape == "cut_square":  # a square with its top-right corner cut off, legs 42% of the side
        cut = 0.42 * side
        return (np.abs(dx) <= r) & (np.abs(dy) <= r) & ((cx + r - px) + (py - (cy - r)) >= cut)
    if shape == "squashed_circle":  # a circle squashed 30% vertically
        ry = 0.7 * r
        return (dx / r) ** 2 + (dy / ry) ** 2 <= 1
    if shape == "short_cross":  # a plus sign whose arms are half its width: the arms are half as long
        h = side / 4
        box = (np.abs(dx) <= r) & (np.abs(dy) <= r)
        return box & ((np.abs(dx) <= h) | (np.abs(dy) <= h))
    raise ValueError(f"unknown shape {shape!r}")


def _pil_polygon(shape: str, left: float, top: float, side: float, conv: Convention) -> list | None:
    """Polygon vertices in PIL's coordinates (integer = pixel centre), or None for an ellipse."""
    r = side / 2
    cx, cy = left + r, top + r
    x0, y0, x1, y1 = left, top, left + side, top + side
    if shape == "square":
        pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    elif shape == "diamond":
        pts = [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    elif shape == "triangle":
        pts = [(cx, y0), (x1, y1), (x0, y1)]
    elif shape == "cross":
        h = arm_width(side, conv) / 2
        a, b = cx - h, cx + h
        c, d = cy - h, cy + h
        pts = [(a, y0), (b, y0), (b, c), (x1, c), (x1, d), (b, d), (b, y1), (a, y1), (a, d), (x0, d),
               (x0, c), (a, c)]  # fmt: skip
    else:
        return None
    # continuous -> PIL: PIL's coordinate i is pixel i's centre (continuous i + 0.5); its own fill
    # rule (edges included, float vertices) then differs from a pure centre test at the edges
    out = []
    for x, y in pts:
        px, py = x - 0.5, y - 0.5
        if conv.raster == "pil_int":
            px, py = math.floor(px + 0.5), math.floor(py + 0.5)
        out.append((px, py))
    return out


def coverage(
    shape: str, o: Obj, size: int, conv: Convention, soft: bool
) -> tuple[np.ndarray, tuple[int, int]]:
    """Coverage in [0, 1] of one object on a window of the canvas, and the window's top-left corner."""
    left, top, side = extent(o, conv)
    m = 3
    wx0, wy0 = max(0, int(math.floor(left)) - m), max(0, int(math.floor(top)) - m)
    wx1, wy1 = min(size, int(math.ceil(left + side)) + m), min(size, int(math.ceil(top + side)) + m)
    w, h = wx1 - wx0, wy1 - wy0
    # PIL draws the five shapes and the squashed circle; the other near misses are sampled
    pil_ok = shape not in ("cut_square", "short_cross")
    if conv.raster in ("pil", "pil_int") and not soft and pil_ok:
        im = Image.new("L", (w, h), 0)
        d = ImageDraw.Draw(im)
        poly = _pil_polygon(shape, left - wx0, top - wy0, side, conv)
        if poly is not None:
            d.polygon(poly, fill=255)
        else:
            # an ellipse through the same box, in PIL's inclusive pixel coordinates
            a0, b0 = left - wx0, top - wy0
            box = [a0, b0, a0 + side - 1, b0 + side - 1]
            if conv.raster == "pil_int" or shape != "circle":
                box = [round(v) for v in box]
            if shape == "squashed_circle":
                box = [box[0], box[1] + 0.15 * side, box[2], box[3] - 0.15 * side]
            d.ellipse(box, fill=255)
        return np.asarray(im, np.float32) / 255.0, (wx0, wy0)
    k = conv.factor if soft or conv.raster == "super" else 1
    xs = wx0 + (np.arange(w * k) + 0.5) / k
    ys = wy0 + (np.arange(h * k) + 0.5) / k
    hi = inside(shape, xs[None, :], ys[:, None], left, top, side, conv).astype(np.float32)
    if k == 1:
        return hi, (wx0, wy0)
    im = Image.fromarray(hi * 255.0, mode="F").resize((w, h), FILTERS[conv.filt])
    cov = np.clip(np.asarray(im, np.float32) / 255.0, 0.0, 1.0)
    if not soft:
        cov = (cov >= 0.5).astype(np.float32)  # a clean image has no antialiasing
    return cov, (wx0, wy0)


def render(scene: Scene, conv: Convention, soft: bool = False, rng: random.Random | None = None,
           extra: tuple[tuple[str, Obj], ...] = ()) -> Image.Image:  # fmt: skip
    """Draw a scene (plus `extra` (shape, box) pairs such as near misses) under one convention.

    soft: antialiased coverage, then a slight Gaussian blur (radius 0.3-0.7) and Gaussian noise
    of sigma 10-20 (both drawn from `rng`).
    """
    size = scene.size
    a = np.empty((size, size, 3), np.float32)
    a[:] = BACKGROUND
    for shape, o in [(o.shape, o) for o in scene.objects] + list(extra):
        cov, (x0, y0) = coverage(shape, o, size, conv, soft)
        h, w = cov.shape
        c = cov[..., None]
        a[y0 : y0 + h, x0 : x0 + w] = a[y0 : y0 + h, x0 : x0 + w] * (1 - c) + np.asarray(COLORS[o.color]) * c
    if not soft:
        return Image.fromarray(a.round().astype(np.uint8), mode="RGB")
    rng = rng or random.Random(0)
    im = Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8), mode="RGB")
    im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.7)))
    nrng = np.random.default_rng(rng.randrange(2**32))
    b = np.asarray(im, np.float32) + nrng.normal(0.0, rng.uniform(10.0, 20.0), (size, size, 3))
    return Image.fromarray(np.clip(b, 0, 255).round().astype(np.uint8), mode="RGB")


NEAR_MISSES = ("cut_square", "squashed_circle", "short_cross")


def near_miss(rng: random.Random, size: int, kind: str, soft: bool) -> tuple[Image.Image, Convention]:
    """One near-miss blob (of a random colour, at a contract size and place) on an empty canvas."""
    conv = Convention.draw(rng, soft)
    lo, hi = max(4, round(0.12 * size)), round(0.30 * size)
    s = rng.randint(lo, hi)
    o = Obj("square", rng.choice(list(COLORS)), rng.randint(0, size - s), rng.randint(0, size - s), s)
    return render(Scene(size, ()), conv, soft, rng, extra=((kind, o),)), conv
