"""The contract's five shapes as ideal figures in continuous coordinates, and their drawings.

Pixel i covers [i, i + 1). A shape lives in a square box (left, top, side): the circle fills it,
the square is it, the triangle has its apex at the top edge's midpoint and its base on the bottom
edge, the diamond touches the four edge midpoints and the cross is two bars a third of the side
wide. Nothing here comes from a renderer: `coverage` integrates the figure over each pixel, which
is what an ideal antialiasing renderer draws and what every hard-edged renderer cuts at about one
half. The judge's fits compare images with these drawings (`templates`, cached per side).
"""

from __future__ import annotations

import math

import numpy as np

from illume_core.world.scenes import SHAPES

SHAPE_NAMES: tuple[str, ...] = tuple(SHAPES)
# share of the box each shape fills, and the height of its centroid below the box's centre (per side)
FILL = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5, "diamond": 0.5, "cross": 5 / 9}
# outline length per unit side
PERIMETER = {"circle": math.pi, "square": 4.0, "triangle": 1 + math.sqrt(5), "diamond": 2 * math.sqrt(2),
             "cross": 4.0}  # fmt: skip


def inside(shape: str, dx: np.ndarray, dy: np.ndarray, r: float, arm_px: float = 0.0) -> np.ndarray:
    """Bool: points (dx, dy) relative to the box centre lie in the shape of half-side r.

    arm_px widens a cross's bars by that many pixels (a hard-edged fill rule that includes the
    pixels a bar's edges pass through draws them up to a pixel wider than a third)."""
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (ax <= r) & (ay <= r)
    if shape == "diamond":
        return ax + ay <= r
    if shape == "triangle":  # apex (0, -r), base on y = r: |dx| <= (dy + r) / 2
        return (ay <= r) & (2 * ax <= dy + r)
    if shape == "cross":
        a = r / 3 + arm_px / 2
        return (ax <= r) & (ay <= r) & ((ax <= a) | (ay <= a))
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPE_NAMES}")


def coverage(
    shape: str, size: tuple[int, int], left: float, top: float, side: float, ss: int = 8, arm_px: float = 0.0
) -> np.ndarray:
    """Share of each pixel of an (h, w) grid covered by the shape in box (left, top, side): (h, w)."""
    h, w = size
    r = side / 2
    xs = (np.arange(w * ss) + 0.5) / ss - (left + r)
    ys = (np.arange(h * ss) + 0.5) / ss - (top + r)
    m = inside(shape, xs[None, :], ys[:, None], r, arm_px).astype(np.float32)
    return m.reshape(h, ss, w, ss).mean((1, 3))


def gauss_blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of the last two axes of a float array (zero outside)."""
    if sigma <= 0:
        return a
    r = max(1, math.ceil(3 * sigma))
    x = np.arange(-r, r + 1, dtype=np.float32)
    g = np.exp(-(x**2) / (2 * sigma**2))
    g /= g.sum()
    h, w = a.shape[-2:]
    pad = [(0, 0)] * (a.ndim - 2)
    p = np.pad(a, [*pad, (r, r), (0, 0)])
    a = sum(g[i] * p[..., i : i + h, :] for i in range(2 * r + 1))
    p = np.pad(a, [*pad, (0, 0), (r, r)])
    return sum(g[i] * p[..., :, i : i + w] for i in range(2 * r + 1))
