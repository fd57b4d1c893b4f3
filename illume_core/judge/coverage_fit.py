"""Least-squares fit of ideal shape drawings to a region's coverage field.

A region is described by t, the share of each pixel its object covers (0 background, 1 object):
exactly 0/1 on a hard-edged render, fractional on antialiased edges, blurred and noisy on a
degraded one. Each shape is drawn by `shapes.coverage` (the ideal figure integrated over each
pixel, no renderer involved) at sides in half-pixel steps, positions in half-pixel steps and a
few Gaussian blur widths, and compared with t by least squares with a free amplitude. Every
candidate of one side is scored by two matrix products against the nine whole-pixel shifts of
the window, so the fit costs a few small products per side.

The result per shape is its best sum of squared residuals and the box where it was found;
`classify` (in `classify.py`) decides from these what the region is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from illume_core.judge.shapes import SHAPE_NAMES, coverage, gauss_blur

PAD = 3  # template margin: room for the widest blur's tails
BLURS = (
    0.0,
    0.4,
    0.7,
    1.0,
)  # Gaussian sigmas (pixels) on top of the pixel's own area  # Gaussian sigmas (pixels) on top of the pixel's own area
PHASES = ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5))
# the amplitude a candidate may take (t is normalised to the region's own colour, which blur dims)
AMP = (0.8, 1.3)
_TPL: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}


def templates(h2: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Every shape at side h2 / 2, all phases and blurs: flattened (S * P * B, L * L), squares, L."""
    out = _TPL.get(h2)
    if out is None:
        s = h2 / 2
        L = math.ceil(s + 0.5) + 2 * PAD
        cov = np.stack(
            [coverage(shape, (L, L), PAD + px, PAD + py, s) for shape in SHAPE_NAMES for px, py in PHASES]
        )  # (S * P, L, L)
        tpl = np.stack([gauss_blur(cov, b) for b in BLURS], axis=1).reshape(-1, L * L).astype(np.float64)
        out = (np.ascontiguousarray(tpl), np.ascontiguousarray(tpl * tpl), L)
        _TPL[h2] = out
    return out


def _windows(a: np.ndarray, L: int) -> np.ndarray:
    """The nine (L, L) windows of an (L + 2, L + 2) array at offsets 0..2, flattened: (9, L * L)."""
    v = np.lib.stride_tricks.sliding_window_view(a, (L, L))  # (3, 3, L, L)
    return v.reshape(9, L * L)


@dataclass
class Fit:
    """Per shape (SHAPE_NAMES order): the best sum of squared residuals over the fitted drawing's
    window (pixels within PAD of its box) beyond the noise expected there, that window's weight
    (pixels counted) and the box."""

    excess: np.ndarray  # (S,) residual beyond the noise (var per pixel)
    n: np.ndarray  # (S,)
    boxes: list[tuple[float, float, float]]  # (x0, y0, side) in t's coordinates
    blur: np.ndarray  # (S,) index into BLURS
    amp: np.ndarray  # (S,) fitted amplitude


def fit(t: np.ndarray, w: np.ndarray, cx: float, cy: float, side: float, var: float = 0.0) -> Fit:
    """Fit every shape to the coverage field t (weights w, same (H, W) shape) around a first guess.

    (cx, cy, side): centre and side of the region's box in t's coordinates. Sides from side - 1
    to side + 2 and positions within 1.25 px of the guess are tried. Residuals are summed over
    each candidate's own window, so pixels far from the shape add no noise to its score; windows
    differ in size, so candidates compete on the residual beyond the noise (var per pixel of t).
    """
    tw = t * w
    t2 = tw * t
    H, W = t.shape
    nshape = len(SHAPE_NAMES)
    best = np.full(nshape, np.inf)
    best_n = np.ones(nshape)
    best_b = np.zeros(nshape, dtype=np.int64)
    best_a = np.ones(nshape)
    boxes: list[tuple[float, float, float]] = [(cx - side / 2, cy - side / 2, side)] * nshape
    h2_0 = round(2 * side)
    per = len(PHASES) * len(BLURS)
    for h2 in range(max(4, h2_0 - 2), h2_0 + 5):
        s = h2 / 2
        tpl, tpl2, L = templates(h2)
        # template box top-left at (ox + d + PAD + phase, ...) for d in 0..2 window shifts
        ox = math.floor(cx - s / 2) - PAD - 1
        oy = math.floor(cy - s / 2) - PAD - 1
        if ox < 0 or oy < 0 or ox + L + 2 > W or oy + L + 2 > H:
            continue
        sl = (slice(oy, oy + L + 2), slice(ox, ox + L + 2))
        vt = _windows(tw[sl], L)  # (9, L * L)
        vw = _windows(w[sl], L)
        e0 = _windows(t2[sl], L).sum(1)  # (9,)
        a = tpl @ vt.T  # (S * P * B, 9)
        bb = tpl2 @ vw.T
        amp = np.clip(a / np.maximum(bb, 1e-9), AMP[0], AMP[1])
        nw = vw.sum(1)  # (9,)
        sse = (e0 - var * nw - 2 * amp * a + amp * amp * bb).reshape(nshape, per * 9)
        arg = sse.argmin(1)
        vals = sse[np.arange(nshape), arg]
        amp = amp.reshape(nshape, per * 9)
        if (vals < best).any():
            for i in np.flatnonzero(vals < best):
                j, d = divmod(int(arg[i]), 9)
                px, py = PHASES[j // len(BLURS)]
                dy, dx = divmod(d, 3)
                best[i] = vals[i]
                best_n[i] = nw[d]
                best_b[i] = j % len(BLURS)
                best_a[i] = amp[i, arg[i]]
                boxes[i] = (ox + dx + PAD + px, oy + dy + PAD + py, s)
    return Fit(excess=best, n=best_n, boxes=boxes, blur=best_b, amp=best_a)


def band_residuals(t: np.ndarray, w: np.ndarray, shape: str, box: tuple[float, float, float], blur: int,
                   amp: float) -> np.ndarray:  # fmt: skip
    """Signed residual (t minus the fitted drawing) in the four edge bands of a fitted box, in
    pixels of width: (top, bottom, left, right).

    Each band is the outer quarter of the box on one side, two pixels wider than the box: what
    makes a shape what it is sits there (a diamond's tips at the edge midpoints, a triangle's
    apex, a cross's arm ends, a square's full corners), and a blob the whole-region fit explains
    by averaging a wrong shape over its outline leaves a clear excess or deficit in one of them.
    """
    x0, y0, s = box
    H, W = t.shape
    i0, i1 = max(0, math.floor(x0) - 2), min(W, math.ceil(x0 + s) + 2)
    j0, j1 = max(0, math.floor(y0) - 2), min(H, math.ceil(y0 + s) + 2)
    tpl = coverage(shape, (j1 - j0, i1 - i0), x0 - i0, y0 - j0, s, ss=4)
    tpl = gauss_blur(tpl, BLURS[blur]) if BLURS[blur] else tpl
    r = (t[j0:j1, i0:i1] - amp * tpl) * w[j0:j1, i0:i1]  # (h, w)
    ys = np.arange(j0, j1) + 0.5
    xs = np.arange(i0, i1) + 0.5
    q = s / 4
    bands = [(ys < y0 + q), (ys > y0 + s - q)]
    rows = r.sum(1)
    cols = r.sum(0)
    out = [rows[b].sum() / max(1, b.sum()) for b in bands]
    for b in [(xs < x0 + q), (xs > x0 + s - q)]:
        out.append(cols[b].sum() / max(1, b.sum()))
    return np.asarray(out)


def arm_ratio(t: np.ndarray, w: np.ndarray, box: tuple[float, float, float]) -> float:
    """Width of a cross's arms per unit side, measured on t in the fitted box (x0, y0, side).

    The coverage summed across each arm (over rows 10%-25% of the side in from each end, over
    columns for the side arms, two pixels of margin for blur) divided by the rows summed is the
    arm's width whatever the rasterization or blur; the mean of the four arms over the side.
    """
    x0, y0, s = box
    H, W = t.shape
    tw = t * w
    i0, i1 = max(0, math.floor(x0) - 2), min(W, math.ceil(x0 + s) + 2)
    j0, j1 = max(0, math.floor(y0) - 2), min(H, math.ceil(y0 + s) + 2)
    c = np.arange(max(H, W)) + 0.5
    widths = []
    for lo, hi, size, along in ((y0, y0 + s, H, 0), (x0, x0 + s, W, 1)):
        u = c[:size]
        for band in ((u > lo + 0.1 * s) & (u < lo + 0.25 * s), (u < hi - 0.1 * s) & (u > hi - 0.25 * s)):
            if not band.any():
                continue
            sub = tw[band, i0:i1] if along == 0 else tw[j0:j1, band].T
            widths.append(float(sub.sum()) / int(band.sum()))
    return float(np.mean(widths)) / s if widths else 0.0
