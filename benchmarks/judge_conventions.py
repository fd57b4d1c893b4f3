"""Every convention of the alt renderer, every shape, every side of a 64 px canvas: which clean drawings
the judge misnames.

One object per image (random colour and place), drawn hard-edged under each of the 528 conventions
of `benchmarks/judge_ambiguity.py` (1,584 for the cross, whose bar rounding varies), at sides
8-19 px; prints per shape and side the drawings not named as exactly that one shape, and what they
were named.

    .venv/bin/python benchmarks/judge_conventions.py
    .venv/bin/python benchmarks/judge_conventions.py --shapes cross --sides 8-10 --verbose
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
import alt_render  # noqa: E402
from judge_ambiguity import CONVS  # noqa: E402

from illume_core.judge import detect  # noqa: E402
from illume_core.world.scenes import COLORS, SHAPES, Obj, Scene  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--sides", default="8-19")
    ap.add_argument("--seed", type=int, default=5, help="colours and places")
    ap.add_argument("--verbose", action="store_true", help="print every misnamed drawing's convention")
    args = ap.parse_args()
    lo, hi = map(int, args.sides.split("-"))
    rng = random.Random(args.seed)
    fails: dict[tuple[str, int], Counter] = defaultdict(Counter)
    total: Counter = Counter()
    for shape in args.shapes.split(","):
        for s in range(lo, hi + 1):
            for conv in CONVS:
                if shape != "cross" and conv.arms != "exact":
                    continue
                o = Obj(shape, rng.choice(list(COLORS)), rng.randint(2, 62 - s), rng.randint(2, 62 - s), s)
                r = detect(alt_render.render(Scene(64, (o,)), conv, False))
                got = tuple([d.shape for d in r.objects] + ["unknown"] * len(r.unknown))
                total[shape, s] += 1
                if got != (shape,):
                    fails[shape, s][got] += 1
                    if args.verbose:
                        print(shape, s, conv, got)
    for key in sorted(total):
        if fails[key]:
            print(key, f"{sum(fails[key].values())}/{total[key]}", dict(fails[key]))
    n = sum(sum(v.values()) for v in fails.values())
    print(f"misnamed: {n} of {sum(total.values())} drawings")


if __name__ == "__main__":
    main()
