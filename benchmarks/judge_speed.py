"""Judge speed on degraded 64 px images, one thread, against a reference judge timed in the same run.

The machine this runs on is shared, so images per second move with its load; both judges are
timed here on the same images, interleaved in rounds, in CPU seconds of this process, and the
ratio is what carries between runs. The reference is any other version of the judge: a single
file (illume_core/judge.py before the package split) or a package directory (illume_core/judge of
another checkout, loaded under another name with its own modules), e.g. main's:

    git show <commit>:illume_core/judge.py > /tmp/judge_ref.py
    .venv/bin/python benchmarks/judge_speed.py --reference /tmp/judge_ref.py --n 300
    .venv/bin/python benchmarks/judge_speed.py --reference ../main/illume_core/judge --n 240
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from illume_core import judge  # noqa: E402
from illume_core.world.prompts import generate_prompts, scene_for, violate  # noqa: E402


def load(path: str):
    if Path(path).is_dir():  # a package: copied under another name, its imports of itself renamed
        tmp = Path(tempfile.mkdtemp()) / "judge_reference"
        tmp.mkdir()
        for f in Path(path).glob("*.py"):
            (tmp / f.name).write_text(f.read_text().replace("illume_core.judge", "judge_reference"))
        sys.path.insert(0, str(tmp.parent))
        return importlib.import_module("judge_reference")
    spec = importlib.util.spec_from_file_location("judge_reference", path)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["judge_reference"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--reference", help="another judge: a single file (illume_core/judge.py) or a package directory"
    )
    ap.add_argument("--n", type=int, default=300, help="degraded images")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    nrng = np.random.default_rng(args.seed)
    metas = generate_prompts(seed=args.seed, per_tag=max(1, args.n // 12))
    items = []
    for meta in metas:
        for scene in (scene_for(meta, rng), violate(meta, rng)):
            items.append((meta, judge.render_degraded(scene, nrng)))
    items = items[: args.n]
    judges = {"this": judge}
    if args.reference:
        judges["reference"] = load(args.reference)
    for j in judges.values():  # warm caches out of the timing
        for meta, img in items[:20]:
            j.judge_image(img, meta)
    secs = dict.fromkeys(judges, 0.0)
    for _ in range(args.rounds):
        for name, j in judges.items():
            t0 = time.process_time()
            for meta, img in items:
                j.judge_image(img, meta)
            secs[name] += time.process_time() - t0
    rates = {name: args.rounds * len(items) / s for name, s in secs.items()}
    for name, r in rates.items():
        print(
            f"{name}: {r:.0f} degraded images per CPU second (64 px, one thread, {len(items)} images x {args.rounds})"
        )
    if "reference" in rates:
        print(f"ratio this / reference: {rates['this'] / rates['reference']:.2f}")


if __name__ == "__main__":
    main()
