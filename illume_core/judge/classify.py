"""Name a region's shape from the fits of every ideal shape, or call it unknown.

The shape whose drawing leaves the least residual wins, and is named only if it passes every gate
of what defines it; otherwise the region is "unknown" (never the nearest guess). The tolerances
were set from `benchmarks/judge_calibrate.py` (seed 1): single objects of every shape and every
near miss, drawn by the project's renderer and by the independent one under random conventions,
clean and soft, at sides 12%-30% of canvases of 32-512 px (see docs/JUDGE.md).

- Fit: the residual beyond the noise, per pixel of outline, must stay under what rasterization
  conventions and blur leave on drawings of the true shape (FIT_EXACT / FIT_SOFT), plus three
  standard deviations of the noise's own sum of squares.
- Aspect: every box is square; the region's extent (cut at half coverage) may differ between
  width and height by a rasterization pixel (two for a triangle, whose apex is thin), a blurred
  one by a little more: a circle squashed 30% is not a circle.
- Arms: a cross's arm width, measured across each arm, is a third of its side (a plus sign
  with fat arms is not this cross).
- Symmetry (exact masks): a square drawn by any convention is a rectangle, symmetric about its
  box; one with a corner cut is not.
"""

from __future__ import annotations

import math

import numpy as np

from illume_core.judge.coverage_fit import Fit
from illume_core.judge.pixels import UNKNOWN
from illume_core.judge.shapes import PERIMETER, SHAPE_NAMES

# residual allowed per pixel of outline (in t^2 units, after the noise is taken off)
FIT_EXACT = 0.12
FIT_SOFT = 0.07
NOISE_Z = 3.0
# width/height difference allowed: pixels, then share of the side beyond which it is too much
ASPECT_PX_EXACT = 1
ASPECT_PX_SOFT = 1
ASPECT_FRAC = 0.15
# a diamond on a degraded field: its thin tips make the extent unreliable (blur and noise cut a tip
# below any level); the spread of its coverage across columns and rows may differ by this factor
ASPECT_MOMENT = 1.15
# pixels differing from the mirror image, per pixel of side, allowed to a square (exact masks)
SQUARE_ASYM = 0.65
# a cross's arms are a third of its side: on an exact mask at most ceil(side / 3) + 1 whole pixels
# wide (a bar straddling pixel centres); measured on a blurred field, a third plus 1.5 px
ARM_SLACK_PX = 1.5


def asymmetry(mask: np.ndarray) -> tuple[float, float]:
    """Pixels that differ from the mask's left-right and top-bottom mirror images, about its box."""
    return float((mask != mask[:, ::-1]).sum()) / 2, float((mask != mask[::-1]).sum()) / 2


def mask_arm_width(mask: np.ndarray) -> float:
    """Median width in whole pixels of the rows and columns of a cross's mask that cross only an arm."""
    widths = []
    for m in (mask, mask.T):
        rows = m.sum(1)
        arm = rows[(rows > 0) & (rows < 0.8 * m.shape[1])]
        widths.extend(arm.tolist())
    return float(np.median(widths)) if widths else 0.0


def allowed_excess(shape: str, exact: bool, side: float, var: float, n: float) -> float:
    """The residual beyond the noise a drawing of `shape` may leave: rasterization and blur per
    pixel of outline, plus NOISE_Z standard deviations of the noise's sum of squares over n pixels."""
    return (FIT_EXACT if exact else FIT_SOFT) * PERIMETER[shape] * side + NOISE_Z * var * math.sqrt(2 * n)


def decide(
    res: Fit,
    var: float,
    exact: bool,
    side: float,
    wh: tuple[int, int],
    mask: np.ndarray | None = None,
    arms: float | None = None,
    aspect: float | None = None,
) -> tuple[str, float, int | None]:
    """(shape or UNKNOWN, score 0..1, index of the shape in SHAPE_NAMES or None).

    res: every shape's fit; var: noise variance per pixel of t (0 on exact masks); side: the
    region's side in fit units; wh: its width and height (cut at half coverage) in pixels; mask:
    the region's own pixels in its box (exact masks only); arms: a cross's measured arm ratio
    (degraded fields); aspect: the moment ratio of a diamond's coverage (degraded fields), which
    replaces the extent for it.
    """
    i = int(np.argmin(res.excess))
    if not np.isfinite(res.excess[i]):
        return UNKNOWN, 0.0, None
    shape = SHAPE_NAMES[i]
    allowed = allowed_excess(shape, exact, side, var, float(res.n[i]))
    score = max(0.0, 1.0 - max(0.0, float(res.excess[i])) / max(allowed, 1e-9) / 2)
    if res.excess[i] > allowed:
        return UNKNOWN, score, None
    w, h = wh
    d = abs(w - h)
    px = (ASPECT_PX_EXACT if exact else ASPECT_PX_SOFT) + (shape == "triangle")
    if aspect is not None and shape == "diamond":
        if abs(math.log(aspect)) > math.log(ASPECT_MOMENT):
            return UNKNOWN, score, None
    elif d > px and d > ASPECT_FRAC * max(w, h) * (2 if shape == "triangle" else 1):
        return UNKNOWN, score, None
    if mask is not None and shape == "square" and max(asymmetry(mask)) > SQUARE_ASYM * max(w, h):
        return UNKNOWN, score, None
    if shape == "cross":
        if mask is not None and mask_arm_width(mask) > math.ceil(max(w, h) / 3) + 1:
            return UNKNOWN, score, None
        if mask is None and arms is not None and arms > 1 / 3 + ARM_SLACK_PX / side:
            return UNKNOWN, score, None
    return shape, score, i
