"""Judge benchmark: agreement with ShapesWorld's ground truth (clean and degraded) and speed.

Half of the images match their prompt (prompts.scene_for), half violate exactly one clause
(prompts.violate, cycling through every applicable kind), across all six tags. The same scenes
are then rendered as a generator spoils them (judge.render_degraded). Speed is judged images
per second on one thread.

    .venv/bin/python benchmarks/judge_bench.py --n 2000 --seed 0
"""

from __future__ import annotations

import os

# one core: numpy's BLAS (and torch, if anything imports it) on a single thread
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from illume_core.geneval import TAGS, Metadata  # noqa: E402
from illume_core.judge import judge_image, render_degraded  # noqa: E402
from illume_core.prompts import KIND_DIMENSION, generate_prompts, kinds_for, scene_for, violate  # noqa: E402
from illume_core.world import Scene, render  # noqa: E402


def build(n: int, seed: int, size: int) -> list[tuple[Metadata, Scene, str | None]]:
    """(metadata, scene, violation kind or None) for n images, n / 12 matching and violating per tag."""
    per_tag = max(1, -(-n // 12))  # ceil: at least n images
    rng = random.Random(f"judge-bench:{seed}")
    out: list[tuple[Metadata, Scene, str | None]] = []
    metas = generate_prompts(seed=seed, per_tag=per_tag)
    counter: dict[str, int] = defaultdict(int)
    for meta in metas:
        out.append((meta, scene_for(meta, rng, size=size), None))
        kinds = kinds_for(meta)
        kind = kinds[counter[meta.tag] % len(kinds)]
        counter[meta.tag] += 1
        out.append((meta, violate(meta, rng, size=size, kind=kind), kind))
    return out


def agreement(items, images) -> tuple[dict[str, list[int]], dict[str, list[int]], float]:
    """Per tag [agree, total], per violation kind [agree (right dimension failed), total], seconds."""
    by_tag: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    t0 = time.perf_counter()
    verdicts = [judge_image(img, meta) for (meta, _, _), img in zip(items, images, strict=True)]
    secs = time.perf_counter() - t0
    for (meta, _, kind), j in zip(items, verdicts, strict=True):
        ok = j.correct == (kind is None)
        by_tag[meta.tag][0] += ok
        by_tag[meta.tag][1] += 1
        key = kind or "none (matching)"
        right_dim = (
            ok
            if kind is None
            else ok and [d for d, v in j.dimensions.items() if not v] == [KIND_DIMENSION[kind]]
        )
        by_kind[key][0] += right_dim
        by_kind[key][1] += 1
    return by_tag, by_kind, secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="images (half matching, half violating)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=64, help="canvas side in pixels")
    args = ap.parse_args()
    console = Console()
    items = build(args.n, args.seed, args.size)
    clean = [render(scene) for _, scene, _ in items]
    nrng = np.random.default_rng(args.seed)
    degraded = [render_degraded(scene, nrng) for _, scene, _ in items]
    judge_image(clean[0], items[0][0])  # warm the template caches out of the timing

    c_tag, c_kind, c_secs = agreement(items, clean)
    d_tag, d_kind, d_secs = agreement(items, degraded)

    def pct(v: list[int]) -> str:
        return f"{v[0] / v[1]:.2%} ({v[0]}/{v[1]})"

    t = Table(
        "tag",
        "clean agreement",
        "degraded agreement",
        title=f"judge vs truth, {len(items)} images, {args.size}px, seed {args.seed}",
    )
    for tag in TAGS:
        t.add_row(tag, pct(c_tag[tag]), pct(d_tag[tag]))
    tot = lambda d: [sum(v[0] for v in d.values()), sum(v[1] for v in d.values())]  # noqa: E731
    t.add_row("all", pct(tot(c_tag)), pct(tot(d_tag)), style="bold")
    console.print(t)
    k = Table("violation kind", "clean: right verdict and dimension", "degraded", title="by violation kind")
    for kind in sorted(c_kind):
        k.add_row(kind, pct(c_kind[kind]), pct(d_kind[kind]))
    console.print(k)
    s = Table("images", "clean images/s", "degraded images/s", title="speed, one thread (detect + rules)")
    s.add_row(str(len(items)), f"{len(items) / c_secs:.0f}", f"{len(items) / d_secs:.0f}")
    console.print(s)


if __name__ == "__main__":
    main()
