"""Vision acceptance benchmark: train encoder + semantic tokenizer on ShapesWorld and score them.

Prints held-out image-to-caption retrieval (top-1 among 100), codebook usage, pixel accuracy of
reconstructions, and the judge's GenEval verdicts on reconstructions of held-out prompt renders
(per tag and overall), with wall times. Usage:

    .venv/bin/python benchmarks/vision_bench.py --encoder-steps 300 --tokenizer-steps 1200 --save runs/vision
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from illume_core.model.config import get_preset
from illume_core.model.images import to_pil, to_tensor
from illume_core.train.vision import (
    heldout_stream,
    reconstruction_accuracy,
    retrieval_top1,
    train_contrastive,
    train_pixel_tokenizer,
    train_tokenizer,
)
from illume_core.world.geneval import TAGS, Metadata
from illume_core.world.prompts import generate_prompts, scene_for
from illume_core.world.scenes import render


def judge_correct(img, meta: Metadata) -> bool:
    """The independent judge's GenEval verdict for one image."""
    from illume_core import judge

    if hasattr(judge, "judge_image"):
        return bool(judge.judge_image(img, meta).correct)
    from illume_core.world.rules import apply_rules

    return apply_rules(meta, judge.detect(img).objects).correct


def judged_reconstructions(tokenizer, per_tag: int, seed: int) -> tuple[dict[str, float], dict[str, float]]:
    """Judge scores per tag (plus 'overall', the unweighted tag mean) for renders and their reconstructions."""
    prompts = generate_prompts(seed=10_000 + seed, per_tag=per_tag)
    rng = heldout_stream(seed)
    renders = [render(scene_for(m, rng, tokenizer.cfg.image_size)) for m in prompts]
    recon = to_pil(tokenizer.decode(tokenizer.encode(to_tensor(renders))))
    scores: dict[str, dict[str, list[bool]]] = {"render": {}, "recon": {}}
    for meta, a, b in zip(prompts, renders, recon, strict=True):
        scores["render"].setdefault(meta.tag, []).append(judge_correct(a, meta))
        scores["recon"].setdefault(meta.tag, []).append(judge_correct(b, meta))
    out = []
    for kind in ("render", "recon"):
        tags = {t: sum(v) / len(v) for t, v in scores[kind].items()}
        tags["overall"] = sum(tags[t] for t in TAGS if t in tags) / len([t for t in TAGS if t in tags])
        out.append(tags)
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--encoder-steps", type=int, default=300)
    ap.add_argument("--tokenizer-steps", type=int, default=1200)
    ap.add_argument("--encoder-batch", type=int, default=64)
    ap.add_argument("--tokenizer-batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--override", default="{}", help="JSON of preset fields to replace")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--per-tag", type=int, default=20, help="held-out prompts per tag for the judge")
    ap.add_argument(
        "--usage-renders",
        type=int,
        default=1000,
        help="held-out renders for pixel accuracy and codebook usage",
    )
    ap.add_argument(
        "--pixel-baseline", action="store_true", help="also train and score the pixel-VQ baseline"
    )
    ap.add_argument(
        "--encoder-only",
        action="store_true",
        help="train and score the encoder (retrieval) only, no tokenizer",
    )
    ap.add_argument("--save", type=Path, default=None, help="directory for safetensors weights + config")
    ap.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="score the semantic tokenizer of this checkpoint folder (no training) and exit",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.checkpoint is not None:
        from illume_core.model.checkpoint import load_checkpoint

        tok = load_checkpoint(args.checkpoint).semantic_tokenizer
        if tok is None:
            raise SystemExit(f"{args.checkpoint} holds no semantic tokenizer")
        tok.eval()
        acc = reconstruction_accuracy(tok, n=args.usage_renders, seed=args.seed)
        judged_render, judged_recon = judged_reconstructions(tok, args.per_tag, args.seed)
        print(
            json.dumps(
                {
                    "checkpoint": str(args.checkpoint),
                    "seed": args.seed,
                    **acc,
                    "judge_renders": judged_render,
                    "judge_reconstructions": judged_recon,
                },
                indent=2,
            )
        )
        return
    cfg = get_preset(args.preset, **json.loads(args.override))

    def timed(name: str, train, inputs: tuple, steps: int, batch: int):
        """train(*inputs, steps, batch, seed, lr, progress) logged six times; (result, seconds)."""
        every = max(1, steps // 6)

        def progress(step: int, d: dict[str, float]) -> None:
            if step % every == 0:
                print(f"  {name} {step:5d} " + " ".join(f"{k}={v:.3f}" for k, v in d.items()), flush=True)

        t0 = time.perf_counter()
        out = train(*inputs, steps, batch, args.seed, args.lr, progress)
        return out, time.perf_counter() - t0

    start = time.perf_counter()
    clip, t_enc = timed("encoder", train_contrastive, (cfg,), args.encoder_steps, args.encoder_batch)
    top1 = retrieval_top1(clip, n=100, seed=args.seed)
    encoder_results = {
        "preset": cfg.name,
        "seed": args.seed,
        "encoder_steps": args.encoder_steps,
        "threads": args.threads,
        "retrieval_top1": top1,
        "encoder_train_s": round(t_enc, 1),
    }
    if args.encoder_only:
        print(json.dumps(encoder_results, indent=2))
        return
    tok, t_tok = timed(
        "tokenizer", train_tokenizer, (cfg, clip.encoder), args.tokenizer_steps, args.tokenizer_batch
    )
    # usage over 1,000 held-out renders (64,000 cells): 200 renders hold fewer distinct cell
    # patterns than a 4,096-code book has codes, so they cannot show whether codes are dead
    acc = reconstruction_accuracy(tok, n=args.usage_renders, seed=args.seed)
    judged_render, judged_recon = judged_reconstructions(tok, args.per_tag, args.seed)
    results = {
        **encoder_results,
        "tokenizer_steps": args.tokenizer_steps,
        **acc,
        "judge_renders": judged_render,
        "judge_reconstructions": judged_recon,
        "tokenizer_train_s": round(t_tok, 1),
        "total_s": round(time.perf_counter() - start, 1),
    }
    if args.pixel_baseline:
        t2 = time.perf_counter()
        base = train_pixel_tokenizer(cfg, args.tokenizer_steps, args.tokenizer_batch, args.seed, args.lr)
        results["pixel_vq"] = {
            **reconstruction_accuracy(base, n=args.usage_renders, seed=args.seed),
            "judge_reconstructions": judged_reconstructions(base, args.per_tag, args.seed)[1],
            "train_s": round(time.perf_counter() - t2, 1),
        }
    print(json.dumps(results, indent=2))
    if args.save is not None:
        args.save.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.contiguous() for k, v in clip.state_dict().items()},
            str(args.save / "contrastive.safetensors"),
        )
        save_file(
            {k: v.contiguous() for k, v in tok.state_dict().items()}, str(args.save / "tokenizer.safetensors")
        )
        (args.save / "config.json").write_text(cfg.model_dump_json(indent=2))
        (args.save / "results.json").write_text(json.dumps(results, indent=2))
        print(f"saved weights, config and results under {args.save}")


if __name__ == "__main__":
    main()
