"""Self-assessment with and without the assessment grammar, on one checkpoint.

For held-out ShapesEval-style prompts it builds three images each: a render that matches the
prompt, a render of another prompt (mostly a mismatch) and the checkpoint's own sample. The
model assesses every (image, prompt) pair twice, decoding freely and under the grammar
(illume_core/self_enhance/constrained.py); the judge gives the truth per dimension. Printed per mode: parse
statuses, agreement with the judge per dimension, the agreement a constant answer would get
(the majority truth per dimension, the bar a model must clear to show it looks at the image),
and wall time. Usage:

    .venv/bin/python benchmarks/assessment_decoding.py --checkpoint LAKE/checkpoints/<id> --per-tag 8
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter

import torch

from illume_core.eval.evaluations import prompt_id
from illume_core.judge import judge_image
from illume_core.model.engine import Engine, sample_seed
from illume_core.model.images import png_bytes
from illume_core.world.prompts import generate_prompts, scene_for
from illume_core.world.rules import DIMENSIONS
from illume_core.world.scenes import render

# prompts and scenes of their own, apart from the pipeline's ShapesEval and VQA seeds
PROMPT_SEED = 31_337


def build_items(engine: Engine, per_tag: int, size: int) -> list[dict]:
    """{prompt_id, sample_index, prompt, png, source, truth{dim: bool}} for the three sources."""
    prompts = generate_prompts(seed=PROMPT_SEED, per_tag=per_tag)
    rng = random.Random(PROMPT_SEED)
    items = []
    renders = [render(scene_for(m, rng, size)) for m in prompts]
    pids = [prompt_id(m) for m in prompts]
    seeds = [sample_seed(0, pid, 0) for pid in pids]
    _, samples = engine.draw([m.prompt for m in prompts], seeds)
    for k, m in enumerate(prompts):
        other = renders[(k + 1 + rng.randrange(len(prompts) - 1)) % len(prompts)]
        for j, (source, img) in enumerate((("render", renders[k]), ("other", other), ("sample", samples[k]))):
            truth = judge_image(img, m).dimensions
            items.append(
                {
                    "prompt_id": pids[k],
                    "sample_index": j,
                    "prompt": m.prompt,
                    "png": png_bytes(img),
                    "source": source,
                    "truth": {d: bool(truth.get(d, True)) for d in DIMENSIONS},
                }
            )
    return items


def score(rows: list[dict], items: list[dict]) -> dict:
    truth = {(it["prompt_id"], it["sample_index"]): it["truth"] for it in items}
    hits: dict[str, list[bool]] = {d: [] for d in DIMENSIONS}
    for r in rows:
        t = truth[(r["prompt_id"], r["sample_index"])]
        for d in DIMENSIONS:
            v = r.get(f"{d}_verdict")
            hits[d].append(v in ("yes", "no") and (v == "yes") == t[d])
    out = {d: sum(v) / len(v) for d, v in hits.items()}
    out["overall"] = sum(out[d] for d in DIMENSIONS) / len(DIMENSIONS)
    return out


def constant_bar(items: list[dict]) -> dict:
    out = {}
    for d in DIMENSIONS:
        yes = sum(it["truth"][d] for it in items)
        out[d] = max(yes, len(items) - yes) / len(items)
    out["overall"] = sum(out[d] for d in DIMENSIONS) / len(DIMENSIONS)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="a checkpoint folder (stage 3 or a round's)")
    ap.add_argument("--per-tag", type=int, default=8, help="prompts per GenEval tag (x3 images each)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--examples", type=int, default=3, help="raw answers to print per mode")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engine = Engine(args.checkpoint)
    t0 = time.perf_counter()
    items = build_items(engine, args.per_tag, engine.cfg.image_size)
    print(
        f"checkpoint {args.checkpoint}: {len(items)} (image, prompt) pairs, built in {time.perf_counter() - t0:.1f} s"
    )
    bar = constant_bar(items)
    dims = " ".join(f"{d:>8}" for d in [*DIMENSIONS, "overall"])
    print(f"\n{'mode':<12} {'ok':>5} {'partial':>8} {'failed':>7} {dims} {'wall s':>7}")
    print(
        f"{'constant':<12} {'':>5} {'':>8} {'':>7} "
        + " ".join(f"{bar[d]:8.2f}" for d in [*DIMENSIONS, "overall"])
    )
    for mode, constrained in (("free", False), ("constrained", True)):
        t0 = time.perf_counter()
        rows = engine.assess(
            [{k: v for k, v in it.items() if k != "truth"} for it in items], constrained=constrained
        )
        wall = time.perf_counter() - t0
        st = Counter(r["parse_status"] for r in rows)
        ag = score(rows, items)
        print(
            f"{mode:<12} {st['ok']:>5} {st['partial']:>8} {st['failed']:>7} "
            + " ".join(f"{ag[d]:8.2f}" for d in [*DIMENSIONS, "overall"])
            + f" {wall:7.1f}"
        )
        by_source = {}
        for src in ("render", "other", "sample"):
            keep = [(r, it) for r, it in zip(rows, items, strict=True) if it["source"] == src]
            by_source[src] = score([r for r, _ in keep], [it for _, it in keep])["overall"]
        print(
            f"{'':<12} agreement by image source: " + ", ".join(f"{k} {v:.2f}" for k, v in by_source.items())
        )
        for r in rows[: args.examples]:
            print(f"{'':<12} {r['raw_text']!r}")


if __name__ == "__main__":
    main()
