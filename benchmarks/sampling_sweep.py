"""Sampling settings against the judge, on tuning prompts of their own (never ShapesEval's).

ILLUME samples with CFG 2.0, temperature 1.0 and a large top-k; the pipeline adds a top-p of
0.7 (`IMAGE_SAMPLING`), which this script chose on run 8's base models (docs/BASE_MODEL.md,
section 17). It asks what a checkpoint draws under other settings: for each setting it
samples `--images` images for each of `--per-tag` prompts per GenEval tag, drawn from
`generate_prompts(seed=PROMPT_SEED)` (a seed apart from the pipeline's ShapesEval, VQA and
training seeds), and prints the judge's accuracy per tag and overall, the objects a drawing
holds beyond its prompt's, and the wall time. A setting
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

from illume_core.eval.evaluations import extra_objects, prompt_id
from illume_core.judge import judge_image
from illume_core.model.engine import Engine, sample_seed
from illume_core.model.images import from_png
from illume_core.model.sampling import SamplingParams
from illume_core.world.geneval import TAGS
from illume_core.world.prompts import generate_prompts

# tuning prompts of their own: not ShapesEval's (7_000_001), not the assessment benchmark's
PROMPT_SEED = 424_242


def parse_setting(text: str) -> SamplingParams:
    """'cfg:temperature:top_k[:top_p[:m]]' -> SamplingParams; ValueError names the format."""
    parts = text.split(":")
    form = "cfg:temperature:top_k[:top_p[:m]], e.g. 2:0.7:0, 3:1:0:0.8 or 2:1:0:0.7:m"
    if len(parts) not in (3, 4, 5) or (len(parts) == 5 and parts[4] != "m"):
        raise ValueError(f"setting {text!r}: expected {form}")
    try:
        cfg, temp, k = float(parts[0]), float(parts[1]), int(parts[2])
        top_p = float(parts[3]) if len(parts) >= 4 else 1.0
    except ValueError:
        raise ValueError(f"setting {text!r}: expected numbers in {form}") from None
    if cfg < 0 or temp < 0 or k < 0 or not 0 < top_p <= 1:
        raise ValueError(f"setting {text!r}: cfg, temperature and top_k must be >= 0, top_p in (0, 1]")
    nucleus = "mask" if len(parts) == 5 else "code"
    return SamplingParams(cfg_scale=cfg, temperature=temp, top_k=k or None, top_p=top_p, nucleus=nucleus)


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
    prompts = generate_prompts(seed=PROMPT_SEED, per_tag=args.per_tag)
    items = [
        {
            "prompt_id": prompt_id(m),
            "prompt": m.prompt,
            "sample_index": k,
            "seed": sample_seed(0, prompt_id(m), k),
        }
        for m in prompts
        for k in range(args.images)
    ]
    meta = {prompt_id(m): m for m in prompts}
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
