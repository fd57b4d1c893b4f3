"""Find the objects in an image: regions, their colour, their shape (or "unknown"), their box."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from illume_core.judge import classify
from illume_core.judge.components import label_components
from illume_core.judge.coverage_fit import arm_ratio, fit, moment_aspect, without_speck
from illume_core.judge.pixels import (
    COLOR_NAMES,
    COLOR_TOL,
    NOISE_SIGMA,
    UNKNOWN,
    box_mean,
    nearest,
    nearest_color,
    noise_sigma,
    to_rgb_array,
)
from illume_core.judge.shapes import SHAPE_NAMES, gauss_blur
from illume_core.world.scenes import BACKGROUND

# regions with a longer box side are block-averaged to about this side before the fit: the shape is
# as clear there and the cached templates stay small
FIT_SIDE = 24
# an exact mask is blurred this much (pixels) before the fit: the staircase of a hard edge, which
# differs between renderers, averages out; what defines the shape (a cut corner) does not
EXACT_BLUR = 0.5
# a degraded region's width and height (for the aspect gate) are measured where t exceeds this
ASPECT_CUT = 0.35
# a pixel of a noisy image whose 3x3 mean lies farther than this from the line between the background
# and its region's colour is not the object's (a speck of another colour): at least OFF_AXIS_MIN,
# and OFF_AXIS_Z times the noise variance of the mean per direction (chi-square of two degrees: 3e-4 of
# pixels beyond it; the binomial mean keeps 0.375 of the noise sigma)
OFF_AXIS_MIN = 30.0
OFF_AXIS_Z = 16.0
MEAN_NOISE = 0.375


@dataclass(frozen=True)
class Detection:
    """One region found in an image: its shape and colour (or "unknown"), box, area and fit score."""

    shape: str
    color: str
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1), x1/y1 exclusive, like world.scenes.Obj.box
    area: int
    score: float  # how well the named shape explains the region, 0..1 (see classify.py)

    def to_dict(self) -> dict:
        return {"shape": self.shape, "color": self.color, "box": list(self.box), "area": self.area,
                "score": round(self.score, 3)}  # fmt: skip


@dataclass
class DetectionResult:
    """What `detect` found: recognised objects, blobs that match no shape, and ignored specks."""

    objects: list[Detection]
    unknown: list[Detection]
    ignored_specks: int


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
    3. Its coverage field t: the share of each pixel around the region its object covers, read
       off the line from the measured background to the measured colour (exactly the region's
       mask on an exact render). Every ideal shape is fitted to t (`coverage_fit`) and
       `classify` names the shape, or "unknown" when no shape explains the region as its drawing
       would, whoever drew it.
    """
    raw = to_rgb_array(img)  # (H, W, 3)
    h, w, _ = raw.shape
    mean = box_mean(raw)  # (H, W, 3)
    sigma = noise_sigma(raw, mean)
    noisy = sigma > NOISE_SIGMA
    work = mean if noisy else raw
    idx, d2 = nearest(work.reshape(-1, 3))
    idx = idx.reshape(h, w)
    # an exact render has every pixel on a palette colour; blur or shifts move some off it
    exact = not noisy and float((d2 > 9.0).mean()) < 1e-3
    fg = idx != 0
    bg_pix = raw[~fg]
    bg_pix = bg_pix[:: max(1, len(bg_pix) // 1024)]  # a thousand pixels give the median as well
    bg = np.median(bg_pix, axis=0) if len(bg_pix) > 16 else np.asarray(BACKGROUND, np.float32)  # (3,)
    labels, boxes, areas = label_components(fg)
    min_area = speck_area(h, w)
    big = [k for k in range(len(areas)) if areas[k] >= min_area]
    objects: list[Detection] = []
    unknown: list[Detection] = []
    if big:
        max_side = int(max((boxes[k][2:] - boxes[k][:2]).max() for k in big))
        field = _Field(raw, labels, bg, sigma, exact, max_side, mean if noisy else None)
        for k in big:
            det = field.region(k + 1, boxes[k], int(areas[k]))
            (unknown if det.shape == UNKNOWN else objects).append(det)
    return DetectionResult(objects=objects, unknown=unknown, ignored_specks=len(areas) - len(big))


def _erode(m: np.ndarray) -> np.ndarray:
    p = np.pad(m, 1)
    return m & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def _dilate(m: np.ndarray) -> np.ndarray:
    """8-neighbour dilation by one pixel."""
    p = np.pad(m, 1)
    r = p[:-2] | p[1:-1] | p[2:]
    return r[:, :-2] | r[:, 1:-1] | r[:, 2:]


class _Field:
    """The image with the background taken off, padded, to cut each region's coverage field from."""

    def __init__(self, raw: np.ndarray, labels: np.ndarray, bg: np.ndarray, sigma: float, exact: bool,
                 max_side: int, mean: np.ndarray | None = None):  # fmt: skip
        self.raw = raw
        self.labels = labels
        self.exact = exact
        self.sigma = max(sigma, 2.0)
        self.bg = bg.astype(np.float32)
        self.m = m = max_side // 2 + 12 * (1 + max_side // FIT_SIDE)  # room for any window
        self.rawp = np.pad(raw - self.bg, ((m, m), (m, m), (0, 0)))  # background -> 0
        # the 3x3 binomial mean (noisy images), where a pixel's distance from the line between the
        # background and an object's colour tells a speck of another colour from the object's edge
        self.meanp = None if mean is None else np.pad(mean - self.bg, ((m, m), (m, m), (0, 0)))
        self.labp = np.pad(labels, m, constant_values=-1)  # -1: outside the canvas

    def region(self, k: int, box: np.ndarray, area: int) -> Detection:
        x0, y0, x1, y1 = (int(v) for v in box)
        sub = self.labels[y0:y1, x0:x1] == k  # (h', w')
        inner = _erode(sub)
        if inner.sum() < 3:
            inner = sub
        color_rgb = np.median(self.raw[y0:y1, x0:x1][inner], axis=0)  # (3,)
        ci, d2 = nearest_color(color_rgb)
        color = COLOR_NAMES[ci] if math.sqrt(d2) <= COLOR_TOL else UNKNOWN
        shape, score, fbox = self.shape(k, (x0, y0, x1, y1), color_rgb)
        return Detection(shape=shape, color=color, box=fbox, area=area, score=score)

    def window(self, k: int, box: tuple[int, int, int, int], color_rgb: np.ndarray):
        """Coverage field t, weights, first guess (cx, cy, side) and noise variance of t, in fit units,
        plus the window's origin and scale in image pixels; None if the colour is too close to the
        background to measure."""
        x0, y0, x1, y1 = box
        side = max(x1 - x0, y1 - y0)
        f = max(1, math.ceil(side / FIT_SIDE))
        R = f * ((side // f + 1) // 2 + 9)  # half-size, a multiple of f
        ix, iy = (x0 + x1) // 2, (y0 + y1) // 2
        wx0, wy0 = ix - R + self.m, iy - R + self.m
        lab = self.labp[wy0 : wy0 + 2 * R, wx0 : wx0 + 2 * R]
        own = lab == k
        other = (lab > 0) & ~own
        wgt = own | ((lab == 0) & ~_dilate(other)) if other.any() else own | (lab == 0)
        if self.exact:
            t = own.astype(np.float64)
            t = gauss_blur(t, EXACT_BLUR)
            var = 0.0
        else:
            axis = color_rgb.astype(np.float32) - self.bg
            norm2 = float(axis @ axis)
            if norm2 < 20.0**2:
                return None
            t = np.clip((self.rawp[wy0 : wy0 + 2 * R, wx0 : wx0 + 2 * R] @ axis) / norm2, -0.5, 1.5)
            var = self.sigma**2 / norm2
            if self.meanp is not None:
                # pixels off the line from the background to the object's colour are something else
                # (a speck of another colour on or beside the object): they do not count
                mw = self.meanp[wy0 : wy0 + 2 * R, wx0 : wx0 + 2 * R]
                along = (mw @ axis) / norm2
                perp2 = (mw * mw).sum(2) - along * along * norm2
                off = perp2 > max(OFF_AXIS_MIN**2, OFF_AXIS_Z * (MEAN_NOISE * self.sigma) ** 2)
                if off.any():
                    wgt = wgt & ~off
                    own = own & ~off
        wgt = wgt.astype(np.float64)
        core = own & (t > 0.5)
        rows, cols = np.flatnonzero(core.any(1)), np.flatnonzero(core.any(0))
        if len(rows) == 0:
            return None
        cx, cy = (cols[0] + cols[-1] + 1) / 2, (rows[0] + rows[-1] + 1) / 2
        s = max(cols[-1] - cols[0], rows[-1] - rows[0]) + 1
        if not self.exact:  # the extent for the aspect test: blur and noise thin a tip below one half
            wide = own & (t > ASPECT_CUT)
            rows, cols = np.flatnonzero(wide.any(1)), np.flatnonzero(wide.any(0))
        bw, bh = cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1
        if f > 1:
            n = 2 * R // f
            tw = (t * wgt).reshape(n, f, n, f).sum((1, 3))
            ws = wgt.reshape(n, f, n, f).sum((1, 3))
            t = tw / np.maximum(ws, 1e-9)
            wgt = ws / (f * f)
            var /= f * f
            cx, cy, s = cx / f, cy / f, s / f
        return t, wgt, (cx, cy, s), var, (ix - R, iy - R, f), (bw, bh)

    def shape(self, k: int, box: tuple[int, int, int, int], color_rgb: np.ndarray):
        got = self.window(k, box, color_rgb)
        if got is None:
            return UNKNOWN, 0.0, box
        t, wgt, (cx, cy, s), var, (ox, oy, f), wh = got
        res = fit(t, wgt, cx, cy, s, var, self.exact)
        mask = self.labels[box[1] : box[3], box[0] : box[2]] == k if self.exact else None
        j = int(np.argmin(res.excess))
        if not self.exact and np.isfinite(res.excess[j]):
            sh = SHAPE_NAMES[j]
            if res.excess[j] > classify.allowed_excess(sh, False, s, var, float(res.n[j])):
                # a speck touching the object: forgive one 2x2 block of surplus coverage
                res.excess[j] -= without_speck(
                    t, wgt, sh, res.boxes[j], int(res.blur[j]), float(res.amp[j]), var
                )
        arms = arm_ratio(t, wgt, res.boxes[j]) if SHAPE_NAMES[j] == "cross" else None
        aspect = (
            moment_aspect(t, wgt, res.boxes[j]) if SHAPE_NAMES[j] == "diamond" and not self.exact else None
        )
        shape, score, i = classify.decide(res, var, self.exact, s, wh, mask, arms, aspect)
        if i is None:
            return UNKNOWN, score, box
        if self.exact:  # the region's own pixels are the box
            return shape, score, box
        bx, by, bs = res.boxes[i]
        x0, y0 = round(ox + bx * f), round(oy + by * f)
        n = round(bs * f)
        return shape, score, (x0, y0, x0 + n, y0 + n)
