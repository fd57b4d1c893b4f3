"""The ShapesWorld judge: finds objects (shape, colour, box) in an image and scores GenEval lines.

A classical, model-free pipeline (numpy + PIL only), so it owes nothing to the model it scores:
denoise, split background from foreground, connected regions, colour by the nearest reference
colour, shape by fitting each ideal shape's outline (exact masks) or blurred templates (noisy
images). Scoring is `rules.evaluate`, the same rules that label the training data. Folder
functions read GenEval's image layout and write its results.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from illume_core.geneval import TAGS, Metadata, MetadataError, iter_metadata
from illume_core.rules import DIMENSIONS, evaluate
from illume_core.world import BACKGROUND, COLORS, SHAPES, Obj, Scene, draw_object

UNKNOWN = "unknown"
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
SHAPE_NAMES: tuple[str, ...] = tuple(SHAPES)
# index 0 is the background, then the ten reference colours in the contract's order
_PALETTE = np.array([BACKGROUND, *COLORS.values()], dtype=np.float32)  # (11, 3)
_PAL_SQ = (_PALETTE**2).sum(1)  # (11,)
_MIN_PAIR = min(math.dist(a, b) for a, b in combinations(_PALETTE.tolist(), 2))  # 95.7: orange/yellow
# a region's colour may sit this far from its nearest reference colour and still be named; beyond it
# the colour is "unknown". 0.6 x the closest pair tolerates a 20-per-channel shift (35 in RGB) plus
# residual noise, and is still nearer to one reference than to any other
COLOR_TOL = 0.6 * _MIN_PAIR

MAX_PIXELS = 4096 * 4096
MIN_SIDE = 16
# above this estimated noise sigma (0-255) regions are found on the 3x3 binomial mean of the image
NOISE_SIGMA = 3.0
# noisy images: the best fitted shape must explain this share of the region's signal, and beat the
# next shape by this log-likelihood-ratio-like margin (in units of the noise variance)
FIT_MIN = 0.8
LR_MIN = 8.0
# the fitted amplitude of a template may stray this far from the measured colour (blur dims small shapes)
AMP = (0.85, 1.15)
SIDE_TOL = 2


@dataclass(frozen=True)
class Detection:
    """One region found in an image: its shape and colour (or "unknown"), box, area and template fit."""

    shape: str
    color: str
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1), x1/y1 exclusive, like world.Obj.box
    area: int
    score: float  # IoU with the best-matching shape template (0 when no template could apply)

    def to_dict(self) -> dict:
        return {"shape": self.shape, "color": self.color, "box": list(self.box), "area": self.area,
                "score": round(self.score, 3)}  # fmt: skip


@dataclass
class DetectionResult:
    """What `detect` found: recognised objects, blobs that match no shape, and ignored specks."""

    objects: list[Detection]
    unknown: list[Detection]
    ignored_specks: int


@dataclass
class Judgment:
    """GenEval's verdict on one image plus what the judge saw (JSON-serialisable `details`)."""

    correct: bool
    reason: str
    dimensions: dict[str, bool]
    details: dict


# ---------------------------------------------------------------------------------- loading


def to_rgb_array(img: Image.Image | np.ndarray) -> np.ndarray:
    """Any PIL image or numpy array -> float32 RGB (H, W, 3) on 0..255.

    Alpha is composited over the background grey; 16-bit and float data are rescaled; absurd
    sizes are refused (the judge is for canvases, not posters).
    """
    if isinstance(img, Image.Image):
        w, h = img.size  # checked before converting: a zero-filled bomb is small only as PNG
    elif isinstance(img, np.ndarray):
        img = _numpy_to_array(img)  # already in memory: its shape is checked first
        h, w = img.shape[:2]
    else:
        raise TypeError(f"detect needs a PIL image or a numpy array, got {type(img).__name__}")
    if h * w > MAX_PIXELS or min(h, w) < MIN_SIDE:
        raise ValueError(
            f"image of {w}x{h} pixels is outside what the judge handles "
            f"(sides >= {MIN_SIDE}, at most {MAX_PIXELS} pixels); resize it to the canvas size first"
        )
    return _pil_to_array(img) if isinstance(img, Image.Image) else img


def _pil_to_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float32)
        # 16-bit PNGs arrive as I;16 or I; float images as F in 0..1 or 0..255
        top = float(a.max()) if a.size else 0.0
        scale = 257.0 if top > 255 else (1 / 255 if mode == "F" and top <= 1.0 else 1.0)
        g = np.clip(a / scale, 0, 255)
        return np.repeat(g[..., None], 3, axis=2)
    if mode == "RGB":
        return np.asarray(img, dtype=np.float32)
    if "A" in mode or mode in ("P", "PA") and "transparency" in img.info or mode == "RGBa":
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"), dtype=np.float32)
    return np.asarray(img.convert("RGB"), dtype=np.float32)


def _numpy_to_array(a: np.ndarray) -> np.ndarray:
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an image array (H, W), (H, W, 3) or (H, W, 4); got shape {a.shape}")
    x = a.astype(np.float32)
    if a.dtype == np.uint16 or (a.dtype.kind in "iu" and x.max(initial=0) > 255):
        x = x / 257.0
    elif a.dtype.kind == "f" and x.max(initial=0) <= 1.0:
        x = x * 255.0
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    elif x.shape[2] == 4:
        alpha = x[..., 3:] / 255.0
        x = x[..., :3] * alpha + np.asarray(BACKGROUND, np.float32) * (1 - alpha)
    return np.clip(x, 0, 255)


# ---------------------------------------------------------------------------------- regions


def _box_mean(x: np.ndarray) -> np.ndarray:
    """3x3 binomial mean ([1 2 1] x [1 2 1] / 16) with edge replication, (H, W, ...) -> same shape.

    Cuts noise nearly as much as a flat 3x3 mean (0.375 vs 0.333 of sigma) but keeps a square's
    corner pixel (9/16 of its weight is inside), which small shapes need to stay distinguishable.
    """
    p = np.pad(x, [(1, 1), (1, 1)] + [(0, 0)] * (x.ndim - 2), mode="edge")
    r = p[:-2] + 2 * p[1:-1] + p[2:]  # (H, W + 2, ...)
    return (r[:, :-2] + 2 * r[:, 1:-1] + r[:, 2:]) / 16.0


def _nearest(pix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest palette index and squared distance for pixels (N, 3) -> (N,), (N,)."""
    d = _PAL_SQ[None, :] - 2.0 * pix @ _PALETTE.T  # (N, 11), without the |p|^2 term
    idx = d.argmin(1)
    best = d[np.arange(len(idx)), idx] + (pix**2).sum(1)
    return idx, np.maximum(best, 0.0)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of True in a (H, W) mask: rows, starts, ends (exclusive), row-major order."""
    h, w = mask.shape
    p = np.zeros((h, w + 2), dtype=np.int8)
    p[:, 1:-1] = mask
    d = np.diff(p, axis=1)  # (H, W + 1)
    rows, starts = np.nonzero(d == 1)
    _, ends = np.nonzero(d == -1)
    return rows, starts, ends


def label_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-connected components of a (H, W) bool mask.

    Returns labels (H, W) int32 (0 = none, k = component k), boxes (K, 4) as (x0, y0, x1, y1)
    with exclusive ends, and areas (K,). Run-length labelling: runs in neighbouring rows that
    touch (diagonals included) are joined with a union-find, so the Python work scales with the
    number of runs, not of pixels.
    """
    h, w = mask.shape
    rows, starts, ends = _runs(mask)
    n = len(rows)
    labels = np.zeros((h, w), dtype=np.int32)
    if n == 0:
        return labels, np.zeros((0, 4), dtype=np.int64), np.zeros(0, dtype=np.int64)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    row_first = np.searchsorted(rows, np.arange(h + 1)).tolist()  # first run index of each row
    sl, el = starts.tolist(), ends.tolist()
    for r in range(1, h):
        a0, a1, b1 = row_first[r - 1], row_first[r], row_first[r + 1]
        i = a0
        for j in range(a1, b1):
            sj, ej = sl[j], el[j]
            # runs above that end before this one starts cannot touch it or any later run
            while i < a1 and el[i] < sj:
                i += 1
            k = i
            while k < a1 and sl[k] <= ej:  # touching, diagonals included (exclusive ends)
                ri, rj = find(k), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
                k += 1
    roots = np.array([find(i) for i in range(n)])
    _, comp = np.unique(roots, return_inverse=True)  # (n,) component of each run, 0-based
    k = int(comp.max()) + 1
    lengths = ends - starts
    offsets = np.cumsum(lengths) - lengths
    flat = np.repeat(rows * w + starts - offsets, lengths) + np.arange(int(lengths.sum()))
    labels.flat[flat] = np.repeat(comp + 1, lengths)
    boxes = np.empty((k, 4), dtype=np.int64)
    boxes[:, :2] = np.iinfo(np.int64).max
    boxes[:, 2:] = -1
    np.minimum.at(boxes[:, 0], comp, starts)
    np.minimum.at(boxes[:, 1], comp, rows)
    np.maximum.at(boxes[:, 2], comp, ends)
    np.maximum.at(boxes[:, 3], comp, rows + 1)
    areas = np.bincount(comp, weights=lengths, minlength=k).astype(np.int64)
    return labels, boxes, areas


# ---------------------------------------------------------------------------------- detection


def speck_area(h: int, w: int) -> int:
    """Regions smaller than this many pixels are specks: a quarter of the smallest contract object's box."""
    side = 0.12 * min(h, w)  # the contract's smallest object side
    return max(3, round((side / 2) ** 2))


def detect(img: Image.Image | np.ndarray) -> DetectionResult:
    """Find the objects in an image: recognised shapes, unknown blobs, and the count of specks.

    1. Each pixel of the image (of its 3x3 binomial mean when the image is noisy) goes to its
       nearest palette entry; all that is not nearest the background is foreground, split into
       8-connected regions; regions below `speck_area` are specks.
    2. A region's colour is the nearest reference colour to the median of its inner pixels
       ("unknown" beyond COLOR_TOL).
    3. Its shape: on an exact render (every pixel a palette colour) the region's mask is fitted
       with each ideal shape's signed distance field at sub-pixel placements (`classify_mask`),
       which holds across rasterization conventions. On anything else (noise, blur, shifted
       colours) each pixel is projected onto the line from the measured background to the
       measured colour, and blurred templates of each shape (a few sides, offsets and blur
       widths) are fitted to that field by least squares; the best shape must explain the
       region (fit >= FIT_MIN) and beat the next shape by a clear likelihood margin.
    Anything that fails these tests is an "unknown" blob, reported and never guessed.
    """
    raw = to_rgb_array(img)  # (H, W, 3)
    h, w, _ = raw.shape
    mean = _box_mean(raw)  # (H, W, 3)
    # sd(raw - binomial mean) = 0.8 sigma for white noise; MAD -> sd is / 0.6745
    sigma = float(np.median(np.abs(raw[::2, ::2] - mean[::2, ::2]))) / 0.6745 / 0.8
    noisy = sigma > NOISE_SIGMA
    work = mean if noisy else raw
    idx, d2 = _nearest(work.reshape(-1, 3))
    idx = idx.reshape(h, w)
    # an exact render has every pixel on a palette colour; blur or shifts move some off it
    exact = not noisy and float((d2 > 9.0).mean()) < 1e-3
    fg = idx != 0
    bg_pix = raw[~fg]
    bg = np.median(bg_pix, axis=0) if len(bg_pix) > 16 else np.asarray(BACKGROUND, np.float32)  # (3,)
    labels, boxes, areas = label_components(fg)
    min_area = speck_area(h, w)
    fitter = None if exact else _Fitter(raw, labels, bg, max(sigma, 2.0))
    objects: list[Detection] = []
    unknown: list[Detection] = []
    specks = 0
    for k in range(len(areas)):
        if areas[k] < min_area:
            specks += 1
            continue
        det = _region(raw, labels, k + 1, boxes[k], int(areas[k]), fitter)
        (unknown if det.shape == UNKNOWN else objects).append(det)
    return DetectionResult(objects=objects, unknown=unknown, ignored_specks=specks)


def _erode(m: np.ndarray) -> np.ndarray:
    p = np.pad(m, 1)
    return m & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def _region(
    raw: np.ndarray,
    labels: np.ndarray,
    k: int,
    box: np.ndarray,
    area: int,
    fitter: _Fitter | None,
) -> Detection:
    """Colour and shape of region k (its box from the labels, refined by the fit when there is one)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    sub = labels[y0:y1, x0:x1] == k  # (h', w')
    inner = _erode(sub)
    if inner.sum() < 3:
        inner = sub
    color_rgb = np.median(raw[y0:y1, x0:x1][inner], axis=0)  # (3,)
    ci, d2 = _nearest_color(color_rgb)
    color = COLOR_NAMES[ci] if math.sqrt(d2) <= COLOR_TOL else UNKNOWN
    if fitter is None:
        shape, score = _classify(sub, x1 - x0, y1 - y0)
        return Detection(shape=shape, color=color, box=(x0, y0, x1, y1), area=area, score=score)
    shape, score, fit_box = fitter.fit(k, (x0, y0, x1, y1), color_rgb)
    return Detection(shape=shape, color=color, box=fit_box, area=area, score=score)


def _nearest_color(rgb: np.ndarray) -> tuple[int, float]:
    """Index into COLOR_NAMES of the nearest reference colour, and its squared distance."""
    d = ((_PALETTE[1:] - rgb) ** 2).sum(1)  # (10,)
    i = int(d.argmin())
    return i, float(d[i])


def _classify(crop: np.ndarray, w: int, h: int) -> tuple[str, float]:
    """Best shape for an exact mask cropped to its box, or "unknown"; with its score (see `classify_mask`)."""
    return classify_mask(crop, TAU)


# ---------------------------------------------------------------------------------- geometric fit
#
# Renderers of the contract disagree on rasterization: vertices on pixel corners or centres, boxes
# that end at x1 or x1 - 1, PIL's fill rule or centre sampling or supersampling. All of them agree
# on pixels far from the shape's outline. So a mask is compared with each ideal shape (an exact
# signed distance field, in pixels, at pixel centres) placed at a few sub-pixel centres and sides
# around the mask's box: a pixel only counts against a shape if it is on the wrong side of the
# outline by more than `tau` pixels ("bad"); among shapes with (almost) no bad pixels, the one whose
# wrong-side pixels lie closest to its outline wins. A blob that no shape explains is "unknown".

# pixels on the wrong side of a shape's outline by more than this many pixels cannot come from
# rasterization (half a pixel of sampling convention plus half a pixel of placement error)
TAU = 1.0
# a shape may leave this many bad pixels (plus BAD_FRAC of the region's area) unexplained
BAD_MAX = 1
BAD_FRAC = 0.01
# masks with a longer box side are downscaled to this side first: conventions matter less there,
# and the cached distance fields stay small
FIT_SIDE = 40
_CENTRE_OFFSETS = (-0.5, 0.0, 0.5)
# a tip pixel set at half coverage widens the box by one; a thin tip left out shortens it
_SIDE_OFFSETS = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5)
# the models fitted: (shape, half bar width change for a cross: a bar of s/3 rounded to pixels)
_MODELS = tuple((sh, 0.0) for sh in SHAPE_NAMES) + (("cross", -0.5), ("cross", 0.5))
# outline length per unit side, to express the fit per pixel of outline
_PERIMETER = {
    "circle": math.pi,
    "square": 4.0,
    "triangle": 1 + math.sqrt(5),
    "diamond": 2 * math.sqrt(2),
    "cross": 4.0,
}
# a shape is named only if its likelihood per outline pixel reaches this (set from data, see JUDGE.md)
SCORE_MIN = 0.45
_FIT_PAD = 2
# scale (pixels) of the logistic rasterization model: P(pixel set) = sigmoid(-distance / BETA)
BETA = 0.3
_SDF_CACHE: dict[tuple[int, int, float], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def shape_sdf(
    shape: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray | float, arm: float = 0.0
) -> np.ndarray:
    """Signed distance (pixels, < 0 inside) from points (dx, dy) around a shape's centre, half-side r.

    `arm` widens a cross's half bar width by that many pixels. Exact along edges; at corners it may underestimate the distance, which only makes the test
    more lenient there (where rasterizations differ most).
    """
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - r
    if shape == "square":
        return np.maximum(ax, ay) - r
    if shape == "diamond":
        return (ax + ay - r) / math.sqrt(2.0)
    if shape == "triangle":  # apex (0, -r), base y = r: sides through the apex and the base corners
        return np.maximum(dy - r, (2.0 * ax - dy - r) / math.sqrt(5.0))
    if shape == "cross":  # two bars of width 2r/3 (+ arm: renderers round the bar to whole pixels)
        a = r / 3.0 + arm
        return np.minimum(np.maximum(ax - r, ay - a), np.maximum(ax - a, ay - r))
    raise ValueError(f"unknown shape {shape!r}")


def _fit_tables(w: int, h: int, tau: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a (h, w) box padded by _FIT_PAD: per candidate (shape x centre x side) the pixels that are
    bad if set and bad if unset, and the distances of wrong-side pixels: (4, S * V, P) float32 and
    the candidates' (cx, cy, side) (S * V, 3) in padded-window coordinates. Cached per (w, h, tau)."""
    key = (w, h, tau)
    out = _SDF_CACHE.get(key)
    if out is None:
        if len(_SDF_CACHE) > 256:  # many box sizes (large canvases): keep memory bounded
            _SDF_CACHE.clear()
        H, W = h + 2 * _FIT_PAD, w + 2 * _FIT_PAD
        ys, xs = np.mgrid[0:H, 0:W].astype(np.float32) + 0.5
        xs, ys = xs.ravel()[None, :], ys.ravel()[None, :]  # (1, P) pixel centres
        side = max(w, h)
        cand = np.array(
            [
                (_FIT_PAD + w / 2 + ox, _FIT_PAD + h / 2 + oy, side + ds)
                for ox in _CENTRE_OFFSETS
                for oy in _CENTRE_OFFSETS
                for ds in _SIDE_OFFSETS
            ],
            dtype=np.float32,
        )  # (V, 3)
        dx, dy, r = xs - cand[:, :1], ys - cand[:, 1:2], cand[:, 2:3] / 2
        d = np.concatenate([shape_sdf(sh, dx, dy, r, arm) for sh, arm in _MODELS])  # (M * V, P)
        # cost of a pixel: -log P(set | d) = softplus(d / BETA) if set, softplus(-d / BETA) if not,
        # i.e. a pixel is set with probability sigmoid(-d / BETA): conventions blur the outline
        # by a fraction of a pixel. Clipping d bounds a single pixel's cost (the bad count gates
        # gross errors) and keeps the sums well conditioned.
        z = np.clip(d, -3.0, 3.0) / BETA
        tables = np.stack([d > tau, d < -tau, z]).astype(np.float64)
        base = np.logaddexp(0.0, -z).sum(1)  # (S * V,): the cost of an empty mask
        out = (tables, np.tile(cand, (len(_MODELS), 1)), base)
        _SDF_CACHE[key] = out
    return out


def classify_mask(mask: np.ndarray, tau: float = TAU) -> tuple[str, float]:
    """Shape of a region given as a bool mask cropped to its box, or "unknown"; with a score in 0..1.

    The score is exp(-(negative log-likelihood per outline pixel)) of the chosen shape, in 0..1.
    """
    h, w = mask.shape
    if min(h, w) < 2 or abs(w - h) > max(2.0, 0.2 * max(w, h)):
        return UNKNOWN, 0.0  # contract boxes are square; rasterization changes a side by a pixel or two
    m = mask.astype(np.float32)
    if max(w, h) > FIT_SIDE:
        # a large region: its box-filtered, half-cut downscale is a faithful rasterization
        f = FIT_SIDE / max(w, h)
        nw, nh = max(2, round(w * f)), max(2, round(h * f))
        m = (np.asarray(Image.fromarray(m).resize((nw, nh), Image.Resampling.BOX)) >= 0.5).astype(np.float32)
        h, w = nh, nw
    tables, cand, base = _fit_tables(w, h, tau)
    mp = np.pad(m, _FIT_PAD).ravel().astype(np.float64)  # (P,)
    on = tables @ mp  # (3, S * V)
    area = float(m.sum())
    # set outside by > tau, unset inside by > tau
    bad = on[0] + tables[1].sum(1) - on[1]  # (M * V,)
    cost = base + on[2]  # -log likelihood of the mask
    allowed = BAD_MAX + BAD_FRAC * area
    # per shape: the most likely candidate among those without too many bad pixels
    allowed_cost = np.where(bad <= allowed, cost, np.inf)
    j = int(allowed_cost.argmin())
    if not np.isfinite(allowed_cost[j]):
        return UNKNOWN, 0.0
    model = j // (len(allowed_cost) // len(_MODELS))
    shape = _MODELS[model][0]
    # the likelihood per pixel of outline: a drawing of the shape by any convention stays near
    # exp(-log 2), a blob that is not the shape (a cut corner, fat arms) has long stretches of
    # outline off by a pixel or more
    perim = max(1.0, _PERIMETER[shape] * float(cand[j, 2]))
    score = math.exp(-float(allowed_cost[j]) / perim)
    return (shape if score >= SCORE_MIN else UNKNOWN), score


# ---------------------------------------------------------------------------------- soft fitting

_PAD = 3  # template margin for the blur's tails
_BLURS = (0.4, 0.8, 1.2)  # Gaussian sigmas (pixels) tried for a generator's blur
_SOFT: dict[tuple[int, float], np.ndarray] = {}


def _gauss_blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a 2-D float array (zero outside)."""
    if sigma <= 0:
        return a
    r = 3
    x = np.arange(-r, r + 1, dtype=np.float32)
    g = np.exp(-(x**2) / (2 * sigma**2))
    g /= g.sum()
    p = np.pad(a, r)
    a = sum(g[i] * p[i : i + a.shape[0], r:-r] for i in range(2 * r + 1))
    p = np.pad(a, ((0, 0), (r, r)))
    return sum(g[i] * p[:, i : i + a.shape[1]] for i in range(2 * r + 1))


def soft_templates(s: int, blur: float) -> np.ndarray:
    """Every shape drawn at side s with a margin of _PAD, blurred: float32 (S, s + 6, s + 6), cached."""
    key = (s, blur)
    t = _SOFT.get(key)
    if t is None:
        L = s + 2 * _PAD
        out = []
        for shape in SHAPE_NAMES:
            im = Image.new("L", (L, L), 0)
            draw_object(ImageDraw.Draw(im), Obj(shape, "black", _PAD, _PAD, s), fill=255)  # type: ignore[arg-type]
            out.append(_gauss_blur(np.asarray(im, dtype=np.float32) / 255.0, blur))
        t = np.stack(out).astype(np.float32)
        _SOFT[key] = t
    return t


_SEEN: dict[int, np.ndarray] = {}
_FLAT: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _flat_templates(s: int) -> tuple[np.ndarray, np.ndarray]:
    """Soft templates of side s for every blur, flattened, and their squares: (B * S, L * L) each."""
    out = _FLAT.get(s)
    if out is None:
        tpl = np.concatenate([soft_templates(s, b) for b in _BLURS]).reshape(
            len(_BLURS) * len(SHAPE_NAMES), -1
        )
        out = (np.ascontiguousarray(tpl), np.ascontiguousarray(tpl * tpl))
        _FLAT[s] = out
    return out


def _windows(a: np.ndarray, L: int) -> np.ndarray:
    """The nine (L, L) windows of an (L + 2, L + 2) array at offsets -1..1, flattened: (9, L * L)."""
    v = np.lib.stride_tricks.sliding_window_view(a, (L, L))  # (3, 3, L, L)
    return v.reshape(9, L * L)


def _extent(a: np.ndarray) -> np.ndarray:
    """Span (last - first + 1, 0 if none) of True along the last axis of a bool (S, L) array."""
    L = a.shape[1]
    first = np.where(a.any(1), a.argmax(1), 0)
    last = np.where(a.any(1), L - 1 - a[:, ::-1].argmax(1), -1)
    return last - first + 1


def seen_sides(s: int) -> np.ndarray:
    """Box side each shape drawn at side s shows once blurred and cut at half height: int (S,)."""
    out = _SEEN.get(s)
    if out is None:
        m = soft_templates(s, 1.0) > 0.5  # (S, L, L)
        rows, cols = m.any(2), m.any(1)  # (S, L) each
        out = np.maximum(_extent(rows), _extent(cols))
        _SEEN[s] = out
    return out


class _Fitter:
    """Least-squares fit of blurred shape templates to a region's colour field (noisy images).

    For a region of measured colour c on measured background b, t = (p - b).(c - b) / |c - b|^2
    is about 1 on the object and 0 off it, with noise sigma / |c - b|. Candidates are every
    shape at sides around the region's box, offsets of -1..1 px and three blur widths; each gets
    its best amplitude (0.7..1.3). Pixels of other regions and outside the canvas do not count.
    """

    def __init__(self, raw: np.ndarray, labels: np.ndarray, bg: np.ndarray, sigma: float):
        h, w, _ = raw.shape
        self.m = m = max(h, w) // 3 + 2 * _PAD + 4  # padding wide enough for any candidate
        self.rawp = np.pad(raw - bg, ((m, m), (m, m), (0, 0)))  # (H + 2m, W + 2m, 3), bg -> 0
        self.labp = np.pad(labels, m, constant_values=-1)  # -1: outside the canvas
        self.sigma = sigma
        self._bg = bg.astype(np.float32)

    def fit(
        self, k: int, box: tuple[int, int, int, int], color_rgb: np.ndarray
    ) -> tuple[str, float, tuple[int, int, int, int]]:
        m = self.m
        x0, y0, x1, y1 = box
        bw, bh = x1 - x0, y1 - y0
        axis = color_rgb.astype(np.float32) - self._bg
        norm2 = float(axis @ axis)
        if norm2 < 20.0**2:
            return UNKNOWN, 0.0, box
        R = (max(bw, bh) + 5) // 2 + _PAD + 3  # half-size of the evaluation window
        ix, iy = round((x0 + x1) / 2), round((y0 + y1) / 2)
        wy0, wx0 = iy - R + m, ix - R + m
        lab = self.labp[wy0 : wy0 + 2 * R, wx0 : wx0 + 2 * R]
        wgt = ((lab == 0) | (lab == k)).astype(np.float32)  # (2R, 2R)
        t = (self.rawp[wy0 : wy0 + 2 * R, wx0 : wx0 + 2 * R] @ axis) / norm2  # (2R, 2R)
        t = np.clip(t, -0.5, 1.5) * wgt
        # the region's box cut halfway between background and its colour: blurred edges of a dark
        # object pass for brown or purple and widen the palette region, never this cut
        core = (t > 0.5) & (lab == k)
        rows, cols = np.flatnonzero(core.any(1)), np.flatnonzero(core.any(0))
        if len(rows) == 0:
            return UNKNOWN, 0.0, box
        cx = ix - R + (cols[0] + cols[-1] + 1) / 2
        cy = iy - R + (rows[0] + rows[-1] + 1) / 2
        side = int(max(cols[-1] - cols[0], rows[-1] - rows[0])) + 1
        sides = range(max(3, side - 1), side + 4)
        e0 = float((t * t).sum())
        n_eff = float(wgt.sum())
        var_t = self.sigma**2 / norm2
        best = np.full(len(SHAPE_NAMES), np.inf)
        best_box: list[tuple[int, int, int, int]] = [box] * len(SHAPE_NAMES)
        for s in sides:
            L = s + 2 * _PAD
            # template top-left (window coords) at offset -1; offsets -1..1 via a sliding view
            tx = round(cx - s / 2) - _PAD - 1 - (ix - R)
            ty = round(cy - s / 2) - _PAD - 1 - (iy - R)
            if tx < 0 or ty < 0 or tx + L + 2 > 2 * R or ty + L + 2 > 2 * R:
                continue
            vt = _windows(t[ty : ty + L + 2, tx : tx + L + 2], L)  # (9, L * L)
            vw = _windows(wgt[ty : ty + L + 2, tx : tx + L + 2], L)  # (9, L * L)
            tpl, tpl2 = _flat_templates(s)  # (B * S, L * L) each
            a = tpl @ vt.T  # (B * S, 9): sum w t T
            bb = tpl2 @ vw.T  # (B * S, 9): sum w T^2
            amp = np.clip(a / np.maximum(bb, 1e-6), AMP[0], AMP[1])
            ssd = e0 - 2 * amp * a + amp * amp * bb  # (B * S, 3, 3)
            ssd = ssd.reshape(len(_BLURS), len(SHAPE_NAMES), 9).min(0)  # (S, 9) best blur
            # a shape may only take sides whose blurred drawing would show about this region's box,
            # else a larger diamond passes for a circle and a larger circle for a square
            ssd[np.abs(seen_sides(s) - side) > SIDE_TOL] = np.inf
            arg = ssd.argmin(1)  # (S,)
            vals = ssd[np.arange(len(SHAPE_NAMES)), arg]
            for i in np.flatnonzero(vals < best):
                dy, dx = divmod(int(arg[i]), 3)
                ox = round(cx - s / 2) + dx - 1
                oy = round(cy - s / 2) + dy - 1
                best[i] = vals[i]
                best_box[i] = (ox, oy, ox + s, oy + s)
        order = np.argsort(best)
        s1, s2 = float(best[order[0]]), float(best[order[1]])
        if not np.isfinite(s1):
            return UNKNOWN, 0.0, box
        noise = n_eff * var_t
        fit = 1.0 - max(0.0, s1 - noise) / max(e0 - noise, 1e-6)
        margin = (s2 - s1) / var_t
        i = int(order[0])
        if fit < FIT_MIN or margin < LR_MIN:
            return UNKNOWN, fit, box
        return SHAPE_NAMES[i], fit, best_box[i]


# ---------------------------------------------------------------------------------- robustness spec


def render_degraded(
    scene: Scene,
    rng: np.random.Generator,
    noise: tuple[float, float] = (10.0, 20.0),
    blur: tuple[float, float] = (0.5, 1.0),
    shift: float = 20.0,
    specks: int = 3,
) -> Image.Image:
    """Render a scene the way a generator spoils it: what the judge is specified to withstand.

    Each object (and the background) gets its own colour shift of up to `shift` per channel,
    a few 1-2 px specks are sprinkled, then a Gaussian blur of a radius drawn from `blur` and
    Gaussian noise of a sigma drawn from `noise` (on 0..255).
    """
    from PIL import ImageFilter

    def jitter(rgb: Sequence[int]) -> tuple[int, int, int]:
        v = np.clip(np.asarray(rgb) + rng.uniform(-shift, shift, 3), 0, 255).round().astype(int)
        return (int(v[0]), int(v[1]), int(v[2]))

    size = scene.size
    im = Image.new("RGB", (size, size), jitter(BACKGROUND))
    draw = ImageDraw.Draw(im)
    for o in scene.objects:
        draw_object(draw, o, fill=jitter(COLORS[o.color]))
    for _ in range(specks):
        x, y = (int(v) for v in rng.integers(0, size - 2, 2))
        d = int(rng.integers(1, 3))
        draw.rectangle([x, y, x + d - 1, y + d - 1], fill=jitter(COLORS[str(rng.choice(COLOR_NAMES))]))
    if blur[1] > 0:
        im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(*blur))))
    a = np.asarray(im, dtype=np.float32)
    a = a + rng.normal(0.0, float(rng.uniform(*noise)), a.shape)
    return Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8), mode="RGB")


# ---------------------------------------------------------------------------------- judging


def judge_image(img: Image.Image | np.ndarray, meta: Metadata) -> Judgment:
    """Detect the objects in an image and score the metadata line on them with GenEval's rules."""
    found = detect(img)
    ev = evaluate(meta, found.objects)
    details = {
        "objects": [d.to_dict() for d in found.objects],
        "unknown": [d.to_dict() for d in found.unknown],
        "specks": found.ignored_specks,
        "dimensions": dict(ev.dimensions),
    }
    return Judgment(correct=ev.correct, reason=ev.reason, dimensions=dict(ev.dimensions), details=details)


@dataclass
class ResultLine:
    """One line of GenEval's results jsonl (metadata and details as JSON strings, as GenEval writes)."""

    filename: str
    tag: str
    prompt: str
    correct: bool
    reason: str
    metadata: str
    details: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Skipped:
    """An input the judge could not read: the file, the line (for metadata) and why."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.path}{f':{self.line}' if self.line else ''}: {self.message}"


@dataclass
class JudgeReport:
    results: list[ResultLine] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


@dataclass
class Scores:
    """GenEval's summary: accuracy per tag, the overall score (unweighted mean over tags), counts."""

    per_tag: dict[str, float]
    overall: float
    n: dict[str, int]
    n_correct: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)


_SAMPLE = re.compile(r"\d+\.png")


def _load_png(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except UnidentifiedImageError:
        raise ValueError(
            "cannot read image (not an image file PIL recognises); re-save it as a PNG"
        ) from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"refused a decompression bomb ({e}); resize it to the canvas size first") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image ({e}); re-save it as a PNG") from None


def _work_items(root: Path, skipped: list[Skipped]) -> list[tuple[Metadata, str, Path]]:
    """(metadata, its JSON line, image path) for every readable prompt folder, in GenEval's layout."""
    items = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit()):
        meta_path = folder / "metadata.jsonl"
        samples = folder / "samples"
        images = sorted(p for p in samples.iterdir() if _SAMPLE.fullmatch(p.name)) if samples.is_dir() else []
        if not meta_path.is_file():
            skipped.append(
                Skipped(str(meta_path), None, f"missing metadata.jsonl; {len(images)} image(s) not judged")
            )
            continue
        try:
            lines = list(iter_metadata(meta_path))
        except (OSError, UnicodeDecodeError) as e:
            skipped.append(
                Skipped(str(meta_path), None, f"cannot read ({e}); {len(images)} image(s) not judged")
            )
            continue
        bad = [m for _, m in lines if isinstance(m, MetadataError)]
        if bad or len(lines) != 1:
            line, msg = (bad[0].line, str(bad[0]).split(": ", 1)[1]) if bad else (None, "")
            if not bad:
                msg = f"expected exactly one metadata line, found {len(lines)}"
            skipped.append(Skipped(str(meta_path), line, f"{msg}; {len(images)} image(s) not judged"))
            continue
        meta = lines[0][1]
        assert isinstance(meta, Metadata)
        if not images:
            skipped.append(Skipped(str(samples), None, "no samples/<NNNN>.png images in this prompt folder"))
            continue
        items.extend((meta, meta.dumps(), p) for p in images)
    return items


def judge_folder(root: str | Path, progress: Callable[[int, int], None] | None = None) -> JudgeReport:
    """Judge every image of a GenEval image folder (`<root>/<00000>/metadata.jsonl` + `samples/*.png`).

    Unreadable inputs (a corrupt PNG, a missing metadata.jsonl, a malformed metadata line) are
    recorded in `skipped` with the file (and line) and the rest of the folder is still judged.
    `progress(done, total)` is called after each image.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} is not a folder; pass a GenEval image folder (<dir>/<00000>/samples)"
        )
    report = JudgeReport()
    items = _work_items(root, report.skipped)
    for i, (meta, line, path) in enumerate(items, start=1):
        try:
            img = _load_png(path)
            j = judge_image(img, meta)
        except ValueError as e:
            report.skipped.append(Skipped(str(path), None, str(e)))
        else:
            report.results.append(
                ResultLine(str(path), meta.tag, meta.prompt, j.correct, j.reason, line, json.dumps(j.details))
            )
        if progress is not None:
            progress(i, len(items))
    return report


def write_results(path: str | Path, results: Iterable[ResultLine]) -> None:
    """Write GenEval's results jsonl."""
    with open(path, "w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps(r.to_dict()) + "\n")


def read_results(path: str | Path) -> list[ResultLine]:
    """Read a results jsonl (ours or GenEval's); a bad line raises ValueError naming file and line."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                d = json.loads(text)
                out.append(
                    ResultLine(
                        filename=str(d["filename"]),
                        tag=str(d["tag"]),
                        prompt=str(d.get("prompt", "")),
                        correct=bool(d["correct"]),
                        reason=str(d.get("reason", "")),
                        metadata=d["metadata"]
                        if isinstance(d.get("metadata"), str)
                        else json.dumps(d.get("metadata")),
                        details=d["details"]
                        if isinstance(d.get("details"), str)
                        else json.dumps(d.get("details")),
                    )
                )
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                raise ValueError(
                    f"{path}:{i}: not a GenEval results line ({type(e).__name__}: {e}); "
                    "expected keys filename, tag, correct"
                ) from None
    return out


def summarize(results: Sequence[ResultLine]) -> Scores:
    """GenEval's summary: per-tag accuracy and the overall score, the unweighted mean of tag scores."""
    n: dict[str, int] = {}
    ok: dict[str, int] = {}
    for r in results:
        n[r.tag] = n.get(r.tag, 0) + 1
        ok[r.tag] = ok.get(r.tag, 0) + int(r.correct)
    order = [t for t in TAGS if t in n] + [t for t in n if t not in TAGS]
    per_tag = {t: ok[t] / n[t] for t in order}
    overall = sum(per_tag.values()) / len(per_tag) if per_tag else 0.0
    return Scores(
        per_tag=per_tag, overall=overall, n={t: n[t] for t in order}, n_correct={t: ok[t] for t in order}
    )


__all__ = [
    "DIMENSIONS",
    "Detection",
    "DetectionResult",
    "JudgeReport",
    "Judgment",
    "ResultLine",
    "Scores",
    "Skipped",
    "detect",
    "judge_folder",
    "judge_image",
    "read_results",
    "render_degraded",
    "summarize",
    "write_results",
]
