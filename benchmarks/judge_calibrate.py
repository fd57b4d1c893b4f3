"""Data for the judge's shape gates: how every shape fit scores on single objects drawn by both renderers.

Draws one object per image (each of the five shapes and each near miss of `alt_render`), with the
project's renderer (`world.scenes.render`, `judge.render_degraded`) and the independent one (random
conventions), clean and soft, at sides 12%-30% of canvases of 32-512 px, and records for each
region what `classify.decide` sees (the fit of every shape, the noise, the box). The gates in
`illume_core/judge/classify.py` were set from this data (seed 1; the benchmark uses seed 0).

    .venv/bin/python benchmarks/judge_calibrate.py --n 150 --seed 1 --out runs/judge_calib.json
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
import alt_render  # noqa: E402

from illume_core.judge import classify, detect, render_degraded  # noqa: E402
from illume_core.world.scenes import COLORS, SHAPES, Obj, Scene, render  # noqa: E402

CANVASES = (32, 48, 64, 64, 64, 96, 128, 256, 512)


def sample(rng: random.Random, nrng: np.random.Generator, label: str, renderer: str, soft: bool):
    size = rng.choice(CANVASES)
    lo, hi = max(4, round(0.12 * size)), round(0.30 * size)
    s = rng.randint(lo, hi)
    o = Obj(label if label in SHAPES else "square", rng.choice(list(COLORS)), rng.randint(0, size - s),
            rng.randint(0, size - s), s)  # fmt: skip
    if renderer == "project":
        scene = Scene(size, (o,))
        return (render_degraded(scene, nrng, specks=0) if soft else render(scene)), size, s
    conv = alt_render.Convention.draw(rng, soft)
    if label in SHAPES:
        return alt_render.render(Scene(size, (o,)), conv, soft, rng), size, s
    return alt_render.render(Scene(size, ()), conv, soft, rng, extra=((label, o),)), size, s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="images per label, renderer and style")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="runs/judge_calib.json")
    args = ap.parse_args()
    rng = random.Random(f"calib:{args.seed}")
    nrng = np.random.default_rng(args.seed)
    rows: list[dict] = []
    seen: list = []
    orig = classify.decide

    def spy(res, var, exact, side, wh, mask=None, arms=None, aspect=None):
        asym = classify.asymmetry(mask) if mask is not None else (0.0, 0.0)
        seen.append((res, var, exact, side, wh, asym, arms, aspect))
        return orig(res, var, exact, side, wh, mask, arms, aspect)

    classify.decide = spy
    labels = list(SHAPES) + list(alt_render.NEAR_MISSES)
    for renderer in ("project", "alt"):
        for soft in (False, True):
            for label in labels:
                if renderer == "project" and label not in SHAPES:
                    continue
                for _ in range(args.n):
                    img, size, s = sample(rng, nrng, label, renderer, soft)
                    seen.clear()
                    r = detect(img)
                    if not seen:
                        rows.append(dict(label=label, renderer=renderer, soft=soft, size=size, s=s, found=0))
                        continue
                    res, var, exact, side, wh, asym, arms, aspect = max(seen, key=lambda x: x[3])
                    rows.append(dict(label=label, renderer=renderer, soft=soft, size=size, s=s, found=len(seen),
                                     sse=res.excess.tolist(), n=res.n.tolist(), blur=res.blur.tolist(), amp=res.amp.tolist(), fs=[b[2] for b in res.boxes], var=var, exact=exact, side=side,
                                     w=wh[0], h=wh[1], asym=asym, arms=arms, aspect=aspect, nobj=len(r.objects) + len(r.unknown)))  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    import json

    Path(args.out).write_text(json.dumps(rows, default=float))
    print(f"{len(rows)} rows -> {Path(args.out).with_suffix('.json')}")


if __name__ == "__main__":
    main()
