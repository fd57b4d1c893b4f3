"""8-connected regions of a mask, by run-length labelling (no scipy)."""

from __future__ import annotations

import numpy as np


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
