"""Best of N by the model's own judgment: does self-assessment by likelihood pick better drawings?

For `--per-tag` tuning prompts per tag (`--seed`, never the ShapesEval prompts), the checkpoint
draws `--n` images; the model assesses each by likelihood (illume_core/self_enhance/likelihood.py, default
margins) and keeps the one with the most "yes" dimensions (ties: the one whose worst dimension
is furthest inside its margin). The judge scores every image. Prints JSON with ShapesEval per
tag for: any one image (the mean over all N, what plain sampling gives), the model's pick, and
the oracle (a prompt counts when any of its N images is right: the ceiling of any picker).

    .venv/bin/python benchmarks/self_rerank.py --checkpoint LAKE/checkpoints/<id> --per-tag 20 --n 4
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import torch

from illume_core.eval.evaluations import judge_rows, prompt_id, sample_items
from illume_core.model.engine import Engine
from illume_core.self_enhance.likelihood import LikelihoodMargins, assess_by_likelihood, rank_key
from illume_core.world.prompts import TAGS, generate_prompts

EVAL_SEED = 515_151  # benchmarks/likelihood_assessment.py's evaluation prompts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--per-tag", type=int, default=20)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--seed", type=int, default=EVAL_SEED)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engine = Engine(args.checkpoint)
    metas = generate_prompts(seed=args.seed, per_tag=args.per_tag)
    meta = {prompt_id(m): m for m in metas}
    t0 = time.time()
    samples = engine.sample(sample_items(metas, args.n, round=args.seed))
    t_sample = time.time() - t0
    judged = {(j["prompt_id"], j["sample_index"]): bool(j["correct"]) for j in judge_rows(samples, meta)}
    t0 = time.time()
    codes = torch.tensor([s["image_tokens"] for s in samples])
    margins = LikelihoodMargins()
    assessed = assess_by_likelihood(
        engine.model, engine.parts.processor, [meta[s["prompt_id"]] for s in samples], codes, margins
    )
    t_assess = time.time() - t0
    by_prompt: dict[tuple[str, int], list] = defaultdict(list)
    for s, (_, gains) in zip(samples, assessed, strict=True):
        key = (s["prompt_id"], s["sample_index"])
        # a prompt listed again (small tags) draws further sample indices: each listing is its own N
        by_prompt[(s["prompt_id"], s["sample_index"] // args.n)].append(
            (rank_key(gains, margins), judged[key])
        )
    scores: dict[str, dict[str, list[float]]] = {
        k: defaultdict(list) for k in ("any_one", "picked", "oracle")
    }
    for (pid, _), rows in by_prompt.items():
        assert len(rows) == args.n
        tag = meta[pid].tag
        scores["any_one"][tag].append(sum(ok for _, ok in rows) / len(rows))
        scores["picked"][tag].append(float(max(rows, key=lambda r: r[0])[1]))
        scores["oracle"][tag].append(float(any(ok for _, ok in rows)))
    out: dict = {"checkpoint": args.checkpoint, **{k: v for k, v in vars(args).items() if k != "checkpoint"}}
    for name, per_tag in scores.items():
        tags = {t: round(sum(v) / len(v), 3) for t in TAGS if (v := per_tag.get(t))}
        tags["overall"] = round(sum(tags.values()) / len(tags), 3)
        out[name] = tags
    out["listings"] = len(by_prompt)
    out["sample_s_per_image"] = round(t_sample / len(samples), 4)
    out["assess_s_per_image"] = round(t_assess / len(samples), 4)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
