"""Sampling settings against the judge, on tuning prompts of their own (never ShapesEval's).

ILLUME samples with CFG 2.0, temperature 1.0 and a large top-k; the pipeline adds a top-p of
0.7 (`IMAGE_SAMPLING`), which this script chose on run 8's base models (docs/BASE_MODEL.md,
section 17). It asks what a checkpoint draws under other settings: for each setting it
samples `--images` images for each of `--per-tag` prompts per GenEval tag, the tuning prompts
the train pipeline chooses its sampling on (`illume_core.eval.calibration.tuning_set`: a seed
apart from the pipeline's ShapesEval, VQA and training seeds), and prints the judge's accuracy
per tag and overall, the objects a drawing holds beyond its prompt's, and the wall time. A setting
is `cfg:temperature:top_k[:top_p[:m]]` (top_k 0 = none; temperature 0 = greedy; top_p 1 when left
out; a trailing `m` cuts the nucleus over the cell's shapes, colours summed, then over the chosen
shape's colours: `SamplingParams.nucleus="mask"`). Usage:

    .venv/bin/python benchmarks/sampling_sweep.py --checkpoint LAKE/checkpoints/<id> --per-tag 8 \\
        --settings 2:1:0:0.7 2:1:0 2:1:0:0.8 2:0.8:0
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from illume_core.eval.calibration import tuning_set
from illume_core.eval.evaluations import extra_objects
from illume_core.judge import judge_image
from illume_core.model.engine import Engine
from illume_core.model.images import from_png
from illume_core.model.sampling import parse_setting
from illume_core.world.geneval import TAGS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--per-tag", type=int, default=8)
    ap.add_argument("--images", type=int, default=2, help="images per prompt")
    ap.add_argument("--settings", nargs="+", default=["2:1:0:0.7", "2:1:0", "2:1:0:0.8", "2:0.8:0"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    settings = [(s, parse_setting(s)) for s in args.settings]
    torch.set_num_threads(args.threads)
    engine = Engine(args.checkpoint)
    items, meta = tuning_set(args.per_tag, args.images)
    results = []
    for name, params in settings:
        t0 = time.perf_counter()
        rows = engine.sample(items, params)
        wall = time.perf_counter() - t0
        per_tag: dict[str, list[bool]] = {}
        extra: list[int] = []
        for r in rows:
            m = meta[r["prompt_id"]]
            j = judge_image(from_png(r["png"]), m)
            per_tag.setdefault(m.tag, []).append(bool(j.correct))
            extra.append(extra_objects(sum(c.count for c in m.include), j.details))
        scores = {t: sum(v) / len(v) for t, v in per_tag.items()}
        scores["overall"] = sum(scores[t] for t in TAGS if t in scores) / len(
            [t for t in TAGS if t in scores]
        )
        results.append(
            {
                "setting": name,
                "images": len(rows),
                "sample_s": round(wall, 1),
                **scores,
                # objects drawn beyond the prompt's, per image (docs/BASE_MODEL.md section 17)
                "extra_objects": round(sum(extra) / len(extra), 2),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    print(f"{'setting':>12} {'overall':>8} " + " ".join(f"{t[:8]:>8}" for t in TAGS) + "    extra")
    for r in results:
        print(
            f"{r['setting']:>12} {r['overall']:8.3f} "
            + " ".join(f"{r.get(t, 0.0):8.3f}" for t in TAGS)
            + f" {r['extra_objects']:8.2f}"
        )


if __name__ == "__main__":
    main()
