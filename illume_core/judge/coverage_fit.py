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
_TPL: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, int]] = {}


def templates(h2: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Every shape at side h2 / 2, all phases and blurs, flattened: (S * P * B, L * L) float32, its
    squares, their sums (S * P * B,), and L."""
    out = _TPL.get(h2)
    if out is None:
        s = h2 / 2
        L = math.ceil(s + 0.5) + 2 * PAD
        cov = np.stack(
            [coverage(shape, (L, L), PAD + px, PAD + py, s) for shape in SHAPE_NAMES for px, py in PHASES]
        )  # (S * P, L, L)
        tpl = np.stack([gauss_blur(cov, b) for b in BLURS], axis=1).reshape(-1, L * L).astype(np.float32)
        sq = tpl * tpl
        out = (np.ascontiguousarray(tpl), np.ascontiguousarray(sq), sq.sum(1, dtype=np.float64), L)
        _TPL[h2] = out
    return out


def _windows(a: np.ndarray, L: int) -> np.ndarray:
    """The nine (L, L) windows of an (L + 2, L + 2) array at offsets 0..2, flattened: (9, L * L)."""
    a = np.ascontiguousarray(a)
    s0, s1 = a.strides
    return np.lib.stride_tricks.as_strided(a, (3, 3, L, L), (s0, s1, s0, s1), writeable=False).reshape(
        9, L * L
    )


def _integral(a: np.ndarray) -> np.ndarray:
    """The integral image of a: (H + 1, W + 1), c[y, x] = sum of a[:y, :x]."""
    c = np.zeros((a.shape[0] + 1, a.shape[1] + 1))
    c[1:, 1:] = a.cumsum(0, dtype=np.float64).cumsum(1)
    return c


def _window_sums(c: np.ndarray, oy: int, ox: int, L: int) -> np.ndarray:
    """Sums of the nine (L, L) windows at offsets 0..2 from (oy, ox), read off the integral image c: (9,)."""
    c = c[oy : oy + L + 3, ox : ox + L + 3]
    return (c[L:, L:] - c[:-L, L:] - c[L:, :-L] + c[:-L, :-L]).ravel()


@dataclass
class Fit:
    """Per shape (SHAPE_NAMES order): the best sum of squared residuals over the fitted drawing's
    window (pixels within PAD of its box) beyond the noise expected there, that window's weight
    (pixels counted), the box, and the blur and amplitude of the best drawing."""

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
    tw = (t * w).astype(np.float32)
    c_t2 = _integral(tw * t)  # window sums of w t^2 and of w, for every side, from one pass each
    wf = w.astype(np.float32)
    c_w = _integral(wf)
    all_weighted = wf.min() == 1.0
    H, W = t.shape
    nshape = len(SHAPE_NAMES)
    per = len(PHASES) * len(BLURS)
    h2_0 = round(2 * side)
    found = []  # (h2, ox, oy, vals (S,), arg (S,), nw (9,), amp (S,))
    for h2 in range(max(4, h2_0 - 2), h2_0 + 5):
        s = h2 / 2
        tpl, tpl2, norms, L = templates(h2)
        # template box top-left at (ox + d + PAD + phase, ...) for d in 0..2 window shifts
        ox = math.floor(cx - s / 2) - PAD - 1
        oy = math.floor(cy - s / 2) - PAD - 1
        if ox < 0 or oy < 0 or ox + L + 2 > W or oy + L + 2 > H:
            continue
        sl = (slice(oy, oy + L + 2), slice(ox, ox + L + 2))
        e0 = _window_sums(c_t2, oy, ox, L)  # (9,)
        a = tpl @ _windows(tw[sl], L).T  # (S * P * B, 9): sum of w t T
        if all_weighted or wf[sl].min() == 1.0:  # every pixel counts: sum of w T^2 is the template's own
            bb = norms[:, None]
            nw = np.full(9, float(L * L))
        else:
            bb = tpl2 @ _windows(wf[sl], L).T
            nw = _window_sums(c_w, oy, ox, L)
        amp = np.clip(a / np.maximum(bb, 1e-9), AMP[0], AMP[1])
        sse = (e0 - var * nw - 2 * amp * a + amp * amp * bb).reshape(nshape, per * 9)
        arg = sse.argmin(1)
        rows = np.arange(nshape)
        found.append((h2, ox, oy, sse[rows, arg], arg, nw, amp.reshape(nshape, per * 9)[rows, arg]))
    best = np.full(nshape, np.inf)
    out_n = np.ones(nshape)
    out_b = np.zeros(nshape, dtype=np.int64)
    out_a = np.ones(nshape)
    boxes: list[tuple[float, float, float]] = [(cx - side / 2, cy - side / 2, side)] * nshape
    if found:
        vals = np.stack([f[3] for f in found])  # (sides, S)
        pick = vals.argmin(0)
        for i in range(nshape):
            h2, ox, oy, v, arg, nw, amps = found[int(pick[i])]
            j, d = divmod(int(arg[i]), 9)
            px, py = PHASES[j // len(BLURS)]
            dy, dx = divmod(d, 3)
            best[i], out_n[i], out_b[i], out_a[i] = v[i], nw[d], j % len(BLURS), amps[i]
            boxes[i] = (ox + dx + PAD + px, oy + dy + PAD + py, h2 / 2)
    return Fit(excess=best, n=out_n, boxes=boxes, blur=out_b, amp=out_a)


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


def without_speck(t: np.ndarray, w: np.ndarray, shape: str, box: tuple[float, float, float], blur: int,
                  amp: float, var: float) -> float:  # fmt: skip
    """How much of a fitted drawing's residual one speck explains: the largest excess (beyond the
    noise) of extra coverage in any 2x2 block of its window. A generator's speck touching an object
    joins its region; taking it off must not make a blob that is not the shape pass for it, so only
    one small block of surplus is forgiven, never a deficit (a cut corner) or several blocks."""
    x0, y0, s = box
    H, W = t.shape
    i0, i1 = max(0, math.floor(x0) - PAD), min(W, math.ceil(x0 + s) + PAD)
    j0, j1 = max(0, math.floor(y0) - PAD), min(H, math.ceil(y0 + s) + PAD)
    tpl = coverage(shape, (j1 - j0, i1 - i0), x0 - i0, y0 - j0, s, ss=4)
    tpl = gauss_blur(tpl, BLURS[blur]) if BLURS[blur] else tpl
    r = np.maximum(t[j0:j1, i0:i1] - amp * tpl, 0.0) * w[j0:j1, i0:i1]
    e = np.maximum(r * r - var, 0.0)
    if e.shape[0] < 2 or e.shape[1] < 2:
        return 0.0
    blocks = e[:-1, :-1] + e[1:, :-1] + e[:-1, 1:] + e[1:, 1:]
    return float(blocks.max())
