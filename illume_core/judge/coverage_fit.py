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
# Gaussian sigmas (pixels) on top of the pixel's own area. An exact mask is blurred by 0.5 px before
# the fit (detect.EXACT_BLUR), so its drawings need no more than 0.7: on calibration data (seed 1)
# no true shape drawn hard-edged by either renderer chose 1.0, while near misses did (a wide blur
# rounds a cut corner or a fat arm into a circle or a diamond)
# A degraded field is never sharper than 0.4: its blur and antialiasing add to the pixel's own area
# (4% of true shapes on seed-1 calibration data chose 0.0; without it no seed-1 bench verdict changed)
BLURS = (0.0, 0.4, 0.7, 1.0)
BLUR_SETS = {True: (0, 1, 2), False: (1, 2, 3)}  # exact or not: indices into BLURS
PHASES = ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5))
# the amplitude a candidate may take (t is normalised to the region's own colour, which blur dims)
AMP = (0.8, 1.3)
# drawings fitted: each shape, and on exact masks also a cross whose bars are a pixel wider (a fill
# rule that includes every pixel a bar's edge passes through draws it so; the arm gate in
# classify.py still bounds the width)
VARIANTS: tuple[tuple[str, float], ...] = tuple((shape, 0.0) for shape in SHAPE_NAMES)
VARIANTS_WIDE = (*VARIANTS, ("cross", 1.0))
_TPL: dict[tuple[int, bool], tuple[np.ndarray, np.ndarray, np.ndarray, int]] = {}


def templates(h2: int, exact: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Every drawing at side h2 / 2, all phases and blurs, flattened: (V * P * B, L * L) float32 (rows
    variant-major, then phase, then blur), its squares, their sums (V * P * B,), and L. Exact masks
    get VARIANTS_WIDE, others VARIANTS; blurs BLUR_SETS[exact]."""
    out = _TPL.get((h2, exact))
    if out is None:
        s = h2 / 2
        L = math.ceil(s + 0.5) + 2 * PAD
        variants = VARIANTS_WIDE if exact else VARIANTS
        blurs = [BLURS[b] for b in BLUR_SETS[exact]]
        cov = np.stack(
            [coverage(shape, (L, L), PAD + px, PAD + py, s, arm_px=arm)
             for shape, arm in variants for px, py in PHASES]
        )  # (V * P, L, L)  # fmt: skip
        tpl = np.stack([gauss_blur(cov, b) for b in blurs], axis=1).reshape(-1, L * L).astype(np.float32)
        sq = tpl * tpl
        out = (np.ascontiguousarray(tpl), np.ascontiguousarray(sq), sq.sum(1, dtype=np.float64), L)
        _TPL[h2, exact] = out
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


def fit(t: np.ndarray, w: np.ndarray, cx: float, cy: float, side: float, var: float = 0.0,
        exact: bool = False) -> Fit:  # fmt: skip
    """Fit every shape to the coverage field t (weights w, same (H, W) shape) around a first guess.

    (cx, cy, side): centre and side of the region's box in t's coordinates. Sides from side - 1
    to side + 2 and positions within 1.25 px of the guess are tried: first every shape at whole
    sides (side - 1, side, side + 1, side + 2), then the two best shapes at the half sides beside
    their best (the others cannot win). Three sides a pixel apart, skipping side itself, lost
    small crosses to diamonds (a third of the 9-10 px crosses of some conventions).
    Residuals are summed over each candidate's own window, so pixels far from the shape add no
    noise to its score; windows differ in size, so candidates compete on the residual beyond the
    noise (var per pixel of t). exact: t is a blurred hard-edged mask (fewer blurs, wide crosses).
    """
    tw = (t * w).astype(np.float32)
    c_t2 = _integral(tw * t)  # window sums of w t^2 and of w, for every side, from one pass each
    wf = w.astype(np.float32)
    c_w = _integral(wf)
    all_weighted = wf.min() == 1.0
    H, W = t.shape
    variants = VARIANTS_WIDE if exact else VARIANTS
    nv = len(variants)
    blur_set = BLUR_SETS[exact]
    nb = len(blur_set)
    per = len(PHASES) * nb
    h2_0 = round(2 * side)
    lo, hi = max(4, h2_0 - 2), h2_0 + 4
    # per variant: best (excess, h2, ox, oy, index within the variant's candidates, window weight, amp)
    best: list[tuple] = [(math.inf,)] * nv
    cache: dict[int, tuple] = {}

    def score(h2: int, vs: list[int]) -> None:
        """Every candidate of the variants vs at side h2 / 2: keep each variant's best."""
        got = cache.get(h2)
        if got is None:
            s = h2 / 2
            tpl, tpl2, norms, L = templates(h2, exact)
            # template box top-left at (ox + d + PAD + phase, ...) for d in 0..2 window shifts
            ox = math.floor(cx - s / 2) - PAD - 1
            oy = math.floor(cy - s / 2) - PAD - 1
            if ox < 0 or oy < 0 or ox + L + 2 > W or oy + L + 2 > H:
                cache[h2] = got = ()
            else:
                sl = (slice(oy, oy + L + 2), slice(ox, ox + L + 2))
                win = _windows(tw[sl], L).T
                if (
                    all_weighted or wf[sl].min() == 1.0
                ):  # every pixel counts: sum of w T^2 is the template's own
                    wwin, nw = None, np.full(9, float(L * L))
                else:
                    wwin, nw = _windows(wf[sl], L).T, _window_sums(c_w, oy, ox, L)
                cache[h2] = got = (tpl, tpl2, norms, L, ox, oy, win, wwin, nw, _window_sums(c_t2, oy, ox, L))
        if not got:
            return
        tpl, tpl2, norms, L, ox, oy, win, wwin, nw, e0 = got
        if vs == list(range(vs[0], vs[-1] + 1)):  # a run of variants: a view
            rows: slice | np.ndarray = slice(vs[0] * per, (vs[-1] + 1) * per)
        else:
            rows = np.concatenate([np.arange(v * per, (v + 1) * per) for v in vs])
        a = tpl[rows] @ win  # (rows, 9): sum of w t T
        bb = norms[rows, None] if wwin is None else tpl2[rows] @ wwin
        amp = np.minimum(np.maximum(a / np.maximum(bb, 1e-9), AMP[0]), AMP[1])
        sse = (e0 - var * nw - 2 * amp * a + amp * amp * bb).reshape(len(vs), per * 9)
        arg = sse.argmin(1).tolist()
        amp = amp.reshape(len(vs), per * 9)
        for k, v in enumerate(vs):
            j = arg[k]
            e = float(sse[k, j])
            if e < best[v][0]:
                best[v] = (e, h2, ox, oy, j, float(nw[j % 9]), float(amp[k, j]))

    for h2 in range(lo, hi + 1, 2):
        score(h2, list(range(nv)))
    order = sorted(range(nv), key=lambda v: best[v][0])
    refine: dict[int, list[int]] = {}  # half side -> the variants to try there
    for v in order[:2]:
        if math.isfinite(best[v][0]):
            b = best[v][1]
            for h2 in (b - 1, b + 1):
                if lo <= h2 <= hi:
                    refine.setdefault(h2, []).append(v)
    for h2, vs in refine.items():
        score(h2, sorted(vs))
    nshape = len(SHAPE_NAMES)
    out_e = np.full(nshape, np.inf)
    out_n = np.ones(nshape)
    out_b = np.zeros(nshape, dtype=np.int64)
    out_a = np.ones(nshape)
    boxes: list[tuple[float, float, float]] = [(cx - side / 2, cy - side / 2, side)] * nshape
    for v, (shape, _) in enumerate(variants):
        i = SHAPE_NAMES.index(shape)
        if not best[v][0] < out_e[i]:
            continue
        e, h2, ox, oy, j, nw, amp = best[v]
        c, d = divmod(j, 9)
        px, py = PHASES[c // nb]
        dy, dx = divmod(d, 3)
        out_e[i], out_n[i], out_b[i], out_a[i] = e, nw, blur_set[c % nb], amp
        boxes[i] = (ox + dx + PAD + px, oy + dy + PAD + py, h2 / 2)
    return Fit(excess=out_e, n=out_n, boxes=boxes, blur=out_b, amp=out_a)


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


def moment_aspect(t: np.ndarray, w: np.ndarray, box: tuple[float, float, float]) -> float:
    """Spread of the coverage across columns over its spread across rows (standard deviations about
    its centroid), within the fitted box and 1.5 px around it: 1 for a shape as wide as it is tall,
    whatever the blur; a diamond's thin tips, which a cut at any coverage level loses under blur
    and noise, still count with their share."""
    x0, y0, s = box
    H, W = t.shape
    i0, i1 = max(0, math.floor(x0 - 1.5)), min(W, math.ceil(x0 + s + 1.5))
    j0, j1 = max(0, math.floor(y0 - 1.5)), min(H, math.ceil(y0 + s + 1.5))
    m = np.clip(t[j0:j1, i0:i1], 0.0, 1.0) * w[j0:j1, i0:i1]
    tot = float(m.sum())
    if tot <= 0:
        return 1.0
    px, py = m.sum(0), m.sum(1)
    x, y = np.arange(len(px)), np.arange(len(py))
    vx = float(px @ (x - float(px @ x) / tot) ** 2) / tot
    vy = float(py @ (y - float(py @ y) / tot) ** 2) / tot
    return math.sqrt(vx / vy) if vy > 0 else math.inf


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
