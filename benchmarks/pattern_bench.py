"""The tokenizer as a target at a coarse grid: how many distinct cells the world has, and how
many fitted masks the judge needs to pass the reconstructions.

Part 1 counts the distinct exact cell patterns (palette classes of a cell's pixels) and masks in
`--scenes` renders at 4-px and 8-px cells, and how much of the object cells the most frequent K
patterns cover exactly. Part 2 fits the pattern tokenizer with each of `--masks` mask counts
(x 10 colours = the codebook) and judges its reconstructions of held-out prompt renders
(`--per-tag` per GenEval tag), with mask usage and exactly reconstructed object cells. Usage:

    .venv/bin/python benchmarks/pattern_bench.py --scenes 6000 --masks 204 409 818 1638 --per-tag 20
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import time

import torch

from illume_core.judge import judge_image
from illume_core.model.config import PATTERN_COLOURS, get_preset
from illume_core.model.images import palette_index, to_pil, to_tensor
from illume_core.model.vision_tokenizer import cell_classes
from illume_core.train.vision import fit_pattern_tokenizer
from illume_core.world.prompts import generate_prompts, scene_for
from illume_core.world.scenes import render, sample_scene


def pattern_counts(scenes: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    pixels = to_tensor([render(sample_scene(rng, 64)) for _ in range(scenes)])
    out = []
    for cell in (4, 8):
        cells = torch.cat([cell_classes(chunk, cell).flatten(0, 1) for chunk in pixels.split(500)])
        counts = collections.Counter(bytes(c.to(torch.uint8).tolist()) for c in cells)
        background = counts.get(bytes(cell * cell), 0)
        objects = len(cells) - background
        freq = sorted((v for k, v in counts.items() if k != bytes(cell * cell)), reverse=True)
        cover = {}
        for k in (512, 2048, 4096, 16384):
            cover[k] = round(sum(freq[:k]) / objects, 4)
        masks = {bytes((c > 0).to(torch.uint8).tolist()) for c in cells}
        out.append({"cell": cell, "distinct_patterns": len(counts), "distinct_masks": len(masks),
                    "background_share": round(background / len(cells), 3),
                    "object_cells_covered_by_top_k": cover})  # fmt: skip
    return out


def judged(tok, per_tag: int, seed: int) -> dict:
    prompts = generate_prompts(seed=10_000 + seed, per_tag=per_tag)
    rng = random.Random(seed)
    pixels = to_tensor([render(scene_for(m, rng, 64)) for m in prompts])
    ids = tok.encode(pixels)
    recon = tok.decode(ids)
    by_tag: dict[str, list[bool]] = collections.defaultdict(list)
    for m, im in zip(prompts, to_pil(recon), strict=True):
        by_tag[m.tag].append(judge_image(im, m).correct)
    scores = {t: round(sum(v) / len(v), 3) for t, v in by_tag.items()}
    scores["overall"] = round(sum(scores.values()) / len(scores), 3)
    truth, got = palette_index(pixels), palette_index(recon)
    fg = truth > 0
    masks_used = (ids[ids > 0] // PATTERN_COLOURS).unique().numel()
    return {"judge": scores, "object_pixel_acc": round(float((truth == got)[fg].float().mean()), 4),
            "mask_usage": round(masks_used / (tok.cfg.code_masks - 1), 3),
            "code_usage": round(tok.codebook_usage(ids), 3)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=6000, help="renders counted and fitted to")
    ap.add_argument("--masks", type=int, nargs="+", default=[204, 409, 818, 1638])
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--per-tag", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for row in pattern_counts(args.scenes, args.seed):
        print(json.dumps(row), flush=True)
    for m in args.masks:
        cfg = get_preset("tiny", codebook_size=m * PATTERN_COLOURS)
        t0 = time.perf_counter()
        tok = fit_pattern_tokenizer(cfg, None, args.iters, args.scenes, args.seed)
        fit_s = time.perf_counter() - t0
        print(json.dumps({"masks": m, "codebook": m * PATTERN_COLOURS, "scenes": args.scenes,
                          "fit_s": round(fit_s, 1), **judged(tok, args.per_tag, args.seed)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
