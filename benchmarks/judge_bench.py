"""Judge benchmark: agreement with ShapesWorld's ground truth on two renderers, three styles, and speed.

Half of the images match their prompt (prompts.scene_for), half violate exactly one clause
(prompts.violate, cycling through every applicable kind), across all six tags. Each scene is
drawn by two renderers of the contract:

- project: `world.scenes.render` (clean), `judge.render_degraded` (soft: colour shifts, specks, blur,
  noise), and clean with one distractor;
- alt: `benchmarks/alt_render.py`, an independent renderer that draws every image with a
  random rasterization convention (vertices on pixel corners or centres, box ends at x1 or
  x1 - 1 or x1 + 1, sub-pixel shifts, PIL fill, centre sampling or 2-8x supersampling then
  BOX/BILINEAR/HAMMING/BICUBIC/LANCZOS downscaling); soft = antialiased + blur + noise 10-20.

"distractor" adds exactly one object of a shape the prompt does not name (it cannot change the
verdict). Agreement is reported per tag and per shape (images where that shape is drawn). Then
near misses (a square with a corner cut, a circle squashed 30%, a cross with short arms) drawn
by the alt renderer: any of them reported as a shape is a false accept. Speed is judged images
per second on one thread (detect + rules, images in memory).

    .venv/bin/python benchmarks/judge_bench.py --n 2000 --seed 0
    .venv/bin/python benchmarks/judge_bench.py --n 600 --size 32,128,512 --renderers alt
    .venv/bin/python benchmarks/judge_bench.py --near-miss-sides 30   # false accepts by side
"""

from __future__ import annotations

import os

# one core: numpy's BLAS (and torch, if anything imports it) on a single thread
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

# this checkout's illume_core (not an installed copy) and the alt renderer beside this file
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
import alt_render  # noqa: E402

from illume_core.judge import detect, judge_image, render_degraded  # noqa: E402
from illume_core.world.geneval import TAGS, Metadata  # noqa: E402
from illume_core.world.prompts import KIND_DIMENSION, generate_prompts, kinds_for, scene_for, violate  # noqa: E402
from illume_core.world.rules import apply_rules  # noqa: E402
from illume_core.world.scenes import COLORS, SHAPES, Obj, Scene, place_more, render  # noqa: E402

STYLES = ("clean", "soft", "distractor")
Item = tuple[Metadata, Scene, str | None]


def with_distractor(meta: Metadata, scene: Scene, rng: random.Random) -> Scene | None:
    """The scene plus one object of a shape the prompt does not name, if it fits and keeps the verdict."""
    named = {c.cls for c in [*meta.include, *meta.exclude]}
    free = [s for s in SHAPES if s not in named]
    try:
        out = place_more(rng, scene, [(rng.choice(free), rng.choice(list(COLORS)))])
    except RuntimeError:
        return None
    before, after = apply_rules(meta, scene.objects), apply_rules(meta, out.objects)
    return out if (before.correct, before.dimensions) == (after.correct, after.dimensions) else None


def build(n: int, seed: int, sizes: list[int], distractor: bool) -> list[Item]:
    """(metadata, scene, violation kind or None) for n images, n / 12 matching and violating per tag."""
    per_tag = max(1, -(-n // 12))  # ceil: at least n images
    rng = random.Random(f"judge-bench:{seed}:{distractor}")
    out: list[Item] = []
    metas = generate_prompts(seed=seed, per_tag=per_tag)
    counter: dict[str, int] = defaultdict(int)
    for i, meta in enumerate(metas):
        size = sizes[i % len(sizes)]
        kinds = kinds_for(meta)
        kind = kinds[counter[meta.tag] % len(kinds)]
        counter[meta.tag] += 1
        for k in (None, kind):
            while True:
                if k is None:
                    scene = scene_for(meta, rng, size=size, distractors=False)
                else:
                    scene = violate(meta, rng, size=size, kind=k, distractors=False)  # type: ignore[arg-type]
                if distractor:
                    scene = with_distractor(meta, scene, rng)
                if scene is not None:
                    break
            out.append((meta, scene, k))
    return out


def draw(renderer: str, style: str, items: list[Item], seed: int) -> list:
    if renderer == "project":
        if style == "soft":
            nrng = np.random.default_rng(seed)
            return [render_degraded(scene, nrng) for _, scene, _ in items]
        return [render(scene) for _, scene, _ in items]
    rng = random.Random(f"alt:{seed}:{style}")
    soft = style == "soft"
    return [
        alt_render.render(scene, alt_render.Convention.draw(rng, soft), soft, rng) for _, scene, _ in items
    ]


def agreement(items: list[Item], images: list) -> tuple[dict, dict, dict, float]:
    """Per tag and per drawn shape [agree, total], per violation kind [right dimension, total], seconds."""
    by_tag: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_shape: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    t0 = time.process_time()
    verdicts = [judge_image(img, meta) for (meta, _, _), img in zip(items, images, strict=True)]
    secs = time.process_time() - t0
    for (meta, scene, kind), j in zip(items, verdicts, strict=True):
        ok = j.correct == (kind is None)
        by_tag[meta.tag][0] += ok
        by_tag[meta.tag][1] += 1
        for shape in {o.shape for o in scene.objects}:
            by_shape[shape][0] += ok
            by_shape[shape][1] += 1
        failed = [d for d, v in j.dimensions.items() if not v]
        right_dim = ok if kind is None else ok and failed == [KIND_DIMENSION[kind]]
        by_kind[kind or "none (matching)"][0] += right_dim
        by_kind[kind or "none (matching)"][1] += 1
    return by_tag, by_shape, by_kind, secs


def reference_rate(seconds: float = 1.0) -> float:
    """A fixed numpy workload (a 64 px image to its nearest palette colour), runs per CPU second.

    Speed on this shared machine moves with its load; the judge's rate divided by this one, both
    in CPU time of this process, is comparable between runs.
    """
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (64 * 64, 3)).astype(np.float32)
    pal = rng.uniform(0, 255, (11, 3)).astype(np.float32)
    n, t0 = 0, time.process_time()
    while time.process_time() - t0 < seconds:
        for _ in range(20):
            (img @ pal.T).argmin(1)
        n += 20
    return n / (time.process_time() - t0)


def pct(v: list[int]) -> str:
    return f"{v[0] / v[1]:.2%} ({v[0]}/{v[1]})" if v[1] else "-"


def total(d: dict) -> list[int]:
    return [sum(v[0] for v in d.values()), sum(v[1] for v in d.values())]


def near_misses(n: int, seed: int, sizes: list[int]) -> dict[tuple[str, str], list[int]]:
    """(kind, style) -> [reported as a shape, images] over n images per kind and style."""
    rng = random.Random(f"near-miss:{seed}")
    out: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for style in ("clean", "soft"):
        for kind in alt_render.NEAR_MISSES:
            for i in range(n):
                img, _ = alt_render.near_miss(rng, sizes[i % len(sizes)], kind, style == "soft")
                out[kind, style][0] += bool(detect(img).objects)
                out[kind, style][1] += 1
    return out


def near_misses_by_side(n: int, seed: int, size: int) -> dict[tuple[str, str, int], list[int]]:
    """(kind, style, side) -> [reported as a shape, images]: n images per side of the contract's range."""
    rng = random.Random(f"near-miss-side:{seed}")
    lo, hi = max(4, round(0.12 * size)), round(0.30 * size)
    out: dict[tuple[str, str, int], list[int]] = defaultdict(lambda: [0, 0])
    for style in ("clean", "soft"):
        for kind in alt_render.NEAR_MISSES:
            for s in range(lo, hi + 1):
                for _ in range(n):
                    conv = alt_render.Convention.draw(rng, style == "soft")
                    o = Obj(
                        "square",
                        rng.choice(list(COLORS)),
                        rng.randint(0, size - s),
                        rng.randint(0, size - s),
                        s,
                    )
                    img = alt_render.render(Scene(size, ()), conv, style == "soft", rng, extra=((kind, o),))
                    out[kind, style, s][0] += bool(detect(img).objects)
                    out[kind, style, s][1] += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="images per renderer and style (half matching)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", default="64", help="canvas side(s) in pixels, comma-separated (cycled)")
    ap.add_argument("--renderers", default="project,alt")
    ap.add_argument("--styles", default=",".join(STYLES))
    ap.add_argument("--near-misses", type=int, default=500, help="images per near-miss kind and style")
    ap.add_argument(
        "--near-miss-sides",
        type=int,
        default=0,
        help="only the near misses' false accepts by side: this many images per side, kind and style",
    )
    args = ap.parse_args()
    sizes = [int(s) for s in args.size.split(",")]
    console = Console(width=200)
    if args.near_miss_sides:
        by = near_misses_by_side(args.near_miss_sides, args.seed, sizes[0])
        sides = sorted({k[2] for k in by})
        m = Table(
            "near miss", *map(str, sides), title=f"near-miss false accepts by side (px), {sizes[0]} px canvas"
        )
        for style in ("clean", "soft"):
            for kind in alt_render.NEAR_MISSES:
                m.add_row(
                    f"{kind} {style}",
                    *(f"{by[kind, style, s][0] / by[kind, style, s][1]:.0%}" for s in sides),
                )
        console.print(m)
        return
    plain = build(args.n, args.seed, sizes, distractor=False)
    extra = build(args.n, args.seed, sizes, distractor=True)
    judge_image(render(plain[0][1]), plain[0][0])  # warm the template caches out of the timing
    cols = [(r, s) for r in args.renderers.split(",") for s in args.styles.split(",")]
    res = {}
    for r, s in cols:
        items = extra if s == "distractor" else plain
        res[r, s] = (items, *agreement(items, draw(r, s, items, args.seed)))
    head = [f"{r} {s}" for r, s in cols]
    title = f"judge vs truth, {len(plain)} images per column, {args.size} px, seed {args.seed}"
    t = Table("tag / shape", *head, title=title)
    for tag in TAGS:
        t.add_row(tag, *(pct(res[c][1][tag]) for c in cols))
    for shape in SHAPES:
        t.add_row(shape, *(pct(res[c][2][shape]) for c in cols))
    t.add_row("all", *(pct(total(res[c][1])) for c in cols), style="bold")
    console.print(t)
    kinds = sorted({k for c in cols for k in res[c][3]})
    k = Table("violation kind", *head, title="right verdict and failed dimension, by violation kind")
    for kind in kinds:
        k.add_row(kind, *(pct(res[c][3][kind]) for c in cols))
    console.print(k)
    ref = reference_rate()
    sp = Table(
        "", *head, title="speed: images per CPU second, one thread (detect + rules), and per reference unit"
    )
    sp.add_row("images/s", *(f"{len(res[c][0]) / res[c][4]:.0f}" for c in cols))
    sp.add_row("images / reference", *(f"{len(res[c][0]) / res[c][4] / ref:.3f}" for c in cols))
    sp.caption = f"reference: {ref:.0f} nearest-palette passes over a 64 px image per CPU second"

    console.print(sp)
    if args.near_misses:
        nm = near_misses(args.near_misses, args.seed, sizes)
        m = Table(
            "near miss", "clean: false accepts", "soft: false accepts", title="near misses (alt renderer)"
        )
        for kind in alt_render.NEAR_MISSES:
            m.add_row(kind, pct(nm[kind, "clean"]), pct(nm[kind, "soft"]))
        m.add_row("all", pct(total({k: v for k, v in nm.items() if k[1] == "clean"})),
                  pct(total({k: v for k, v in nm.items() if k[1] == "soft"})), style="bold")  # fmt: skip
        console.print(m)


if __name__ == "__main__":
    main()
