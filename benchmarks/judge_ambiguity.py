"""Which clean drawings no judge can tell apart: masks that two shapes (or a shape and a near miss) share.

Every convention of `alt_render` (geometry, sub-pixel shift, raster, supersampling factor and
filter, cross arm rounding) is drawn for each of the contract's shapes at sides s - 1, s and s + 1
of a 64 px canvas; a hard-edged mask (cropped to its box) that one shape draws under one convention
and another shape under another is the same picture. Reported: per side and shape, the share of
its masks that another shape also draws; per near miss and side, the share of masks (conventions
drawn as the benchmark draws them) that some true shape draws.

    .venv/bin/python benchmarks/judge_ambiguity.py
"""

from __future__ import annotations

import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
import alt_render  # noqa: E402

from illume_core.world.scenes import SHAPES, Obj  # noqa: E402

RASTERS = [("pil", 1, "box"), ("pil_int", 1, "box"), ("sample", 1, "box")] + [
    ("super", f, fl) for f in (2, 3, 4, 8) for fl in ("box", "lanczos")
]
SHIFTS = (0.0, 0.25, -0.25, 0.5)
CONVS = [
    alt_render.Convention(g, (jx, jy), raster, factor, filt, arms)
    for g in ("corners", "centres", "inclusive")
    for jx in SHIFTS
    for jy in SHIFTS
    for arms in ("exact", "round", "floor")
    for raster, factor, filt in RASTERS
]


def mask_key(shape: str, s: int, conv: alt_render.Convention) -> tuple | None:
    cov, _ = alt_render.coverage(shape, Obj("square", "blue", 20, 20, s), 64, conv, False)
    m = cov >= 0.5
    ys, xs = np.nonzero(m)
    if len(ys) == 0:
        return None
    sub = m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    return sub.shape, sub.tobytes()


def main() -> None:
    lo, hi = 8, 19  # the contract's sides at 64 px
    lib: dict[int, dict] = defaultdict(lambda: defaultdict(set))  # side -> mask -> shapes drawing it
    for s in range(lo - 1, hi + 2):
        for shape in SHAPES:
            for c in CONVS:
                if shape == "cross" or c.arms == "exact":
                    lib[s][mask_key(shape, s, c)].add(shape)
    print("true shapes: share of a shape's masks (every convention) that another shape draws at s-1..s+1")
    for s in range(lo, hi + 1):
        row = []
        for shape in SHAPES:
            keys = [mask_key(shape, s, c) for c in CONVS if shape == "cross" or c.arms == "exact"]
            same = Counter()
            for k in keys:
                others = set().union(*(lib[t].get(k, set()) for t in (s - 1, s, s + 1))) - {shape}
                same.update(others)
                same["any"] += bool(others)
            row.append(
                f"{shape} {same['any'] / len(keys):.0%}"
                + (f" {dict(same - Counter(any=same['any']))}" if same["any"] else "")
            )
        print(f"  {s:2d} px: " + "; ".join(row))
    print("near misses: share drawn exactly as some true shape at s-1..s+1 (40 random conventions per side)")
    rng = random.Random("ambiguity:1")
    for kind in alt_render.NEAR_MISSES:
        hits, tot, row = 0, 0, []
        for s in range(lo, hi + 1):
            n = 40
            h = 0
            for _ in range(n):
                k = mask_key(kind, s, alt_render.Convention.draw(rng, False))
                h += any(k in lib[t] for t in (s - 1, s, s + 1))
            hits, tot = hits + h, tot + n
            row.append(f"{s}:{h / n:.0%}")
        print(f"  {kind}: " + " ".join(row) + f"  all {hits / tot:.1%}")


if __name__ == "__main__":
    main()
