"""Text-to-image alone from a checkpoint, then the judge on tuning prompts: a quick A/B of a lever.

Trains the checkpoint's LLM on text-to-image pairs only (stage-2 parameter groups, one learning
rate) for `--steps` steps at `--batch` (32), then samples 2 images for each of 10 tuning prompts per
GenEval tag (`generate_prompts(seed=424242)`, never the ShapesEval prompts) under three
sampling settings and prints the loss and the judge's accuracy per setting and tag as JSON.
`--plain` leaves the pattern code rows without their mask pixels (the factorization before the
pixel maps), to compare against. Start from a lake's `vision` checkpoint for a fresh LLM.

    .venv/bin/python benchmarks/t2i_probe.py --checkpoint LAKE/checkpoints/<vision id> --lr 1.5e-3 --steps 600
    .venv/bin/python benchmarks/t2i_probe.py --checkpoint LAKE/checkpoints/<vision id> --lr 1.5e-3 --steps 600 --plain

A checkpoint written before the pixel maps existed loads with fresh (zero) maps. `--precision`
picks the autocast (auto: bf16 where the CPU multiplies it natively); `--hidden`, `--layers`,
`--intermediate` and `--heads` train a fresh LLM of another shape around the checkpoint's vision
encoder and tokenizer:

    .venv/bin/python benchmarks/t2i_probe.py --checkpoint LAKE/checkpoints/<vision id> --steps 300 --no-judge --precision fp32
    .venv/bin/python benchmarks/t2i_probe.py --checkpoint LAKE/checkpoints/<vision id> --steps 300 --no-judge --precision bf16

`--recipe stage3` trains a stage recipe instead (its whole data mix, its learning rates at the
preset's scale, its optimizer unless `--optimizer` says otherwise): from a stage-2 checkpoint,
what stage 3 adds to drawing, and how that depends on its steps and optimizer; `--steps 0`
judges the checkpoint untouched:

    .venv/bin/python benchmarks/t2i_probe.py --checkpoint LAKE/checkpoints/<stage-2 id> --recipe stage3 --steps 200

The corpus is the base corpus's: two-object scenes in reading order and counting scenes without
distractors (the defaults since 2026-12-07). `--reading-order off` draws them in either order as
before, `--distractors TAG ...` gives objects the prompt does not name to those tags' scenes only
(none given: to no tag's), and `--tag-weights` sets the pairs per tag.
"""

from __future__ import annotations

import argparse
import collections
import json
import time

import torch
from safetensors.torch import load_model, save_model

import illume_core.model.checkpoint as checkpoint
from illume_core.judge import judge_image
from illume_core.model.config import IllumeConfig
from illume_core.model.images import to_pil
from illume_core.model.processor import Processor
from illume_core.model.sampling import SamplingParams, generate_images
from illume_core.model.unified import IllumeModel
from illume_core.settings import BUDGETS
from illume_core.train.data import BaseCorpus, CorpusSpec
from illume_core.train.recipes import StageRecipe, get_recipe
from illume_core.train.stages import Parts, fit_stage
from illume_core.world.geneval import TAGS
from illume_core.world.prompts import generate_prompts

PROMPT_SEED = 424_242  # the tuning prompts of benchmarks/sampling_sweep.py
SETTINGS = ((2.0, 1.0, 1.0), (4.0, 0.7, 1.0), (3.0, 1.0, 0.8), (2.0, 1.0, 0.7))  # cfg, temperature, top-p (the last: the pipeline's since 2026-12-07)
PIXEL_KEYS = ("gen_codes.mask_pixels", "gen_codes.pixel_in.weight", "gen_codes.pixel_out.weight")


def _load_older(module, path, device, what) -> None:
    """Strict, except that the pixel maps may be missing (checkpoints from before them)."""
    missing, unexpected = load_model(module, str(path), strict=False, device=str(device))
    if unexpected or set(missing) - set(PIXEL_KEYS):
        raise checkpoint.CheckpointFormatError(f"{path}: missing {missing}, unexpected {unexpected}")


def judge_settings(parts: Parts, per_tag: int = 10, images: int = 2) -> dict:
    metas = generate_prompts(seed=PROMPT_SEED, per_tag=per_tag)
    prompts = [m.prompt for m in metas] * images
    out = {}
    parts.model.eval()
    for cfg_scale, temperature, top_p in SETTINGS:
        codes = generate_images(
            parts.model,
            parts.processor,
            prompts,
            list(range(len(prompts))),
            SamplingParams(cfg_scale=cfg_scale, temperature=temperature, top_p=top_p),
        )
        by_tag = collections.defaultdict(list)
        for m, im in zip(metas * images, to_pil(parts.semantic.decode(codes)), strict=True):
            by_tag[m.tag].append(judge_image(im, m).correct)
        tags = {t: sum(v) / len(v) for t, v in by_tag.items()}
        out[f"cfg{cfg_scale:g}/t{temperature:g}/p{top_p:g}"] = {
            "overall": round(sum(tags.values()) / len(tags), 3),
            **{t: round(v, 3) for t, v in tags.items()},
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=32, help="text-to-image pairs per step")
    ap.add_argument("--plain", action="store_true", help="code rows without their mask pixels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-judge", action="store_true", help="report the training loss only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    ap.add_argument("--hidden", type=int, help="a fresh LLM of this width (default: the checkpoint's)")
    ap.add_argument("--layers", type=int, help="a fresh LLM of this depth (default: the checkpoint's)")
    ap.add_argument("--intermediate", type=int, help="MLP width of the fresh LLM (default: the checkpoint's)")
    ap.add_argument("--heads", type=int, help="attention heads of the fresh LLM (default: the checkpoint's)")
    ap.add_argument("--optimizer", choices=("adamw", "muon"), help="default: adamw, or the --recipe's")
    ap.add_argument(
        "--recipe",
        help="train this stage recipe (its data mix and learning rates at the preset's scale, e.g. "
        "stage3 from a stage-2 checkpoint) instead of text-to-image alone at --lr; 0 --steps judges "
        "the checkpoint as it is",
    )
    ap.add_argument(
        "--reading-order",
        choices=("on", "off"),
        default="on",
        help="two-object scenes start their objects, row by row, in the order the prompt names them "
        "(on: the corpus default since 2026-12-07; off: as before)",
    )
    ap.add_argument(
        "--distractors",
        nargs="*",
        choices=TAGS,
        metavar="TAG",
        help="the tags whose text-to-image scenes sometimes hold objects their prompt does not name "
        "(default: the corpus's, every tag but counting; none given: no tag)",
    )
    ap.add_argument("--save", help="write the trained model's weights here (safetensors)")
    ap.add_argument("--per-tag", type=int, default=10, help="tuning prompts per tag the judge scores")
    ap.add_argument("--images", type=int, default=2, help="images per tuning prompt")
    ap.add_argument(
        "--tag-weights",
        type=float,
        nargs=6,
        metavar="W",
        help="relative text-to-image pairs per tag, in the order single_object two_object counting "
        "colors position color_attr (default: equal)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    checkpoint._load_fitting = _load_older
    parts = Parts.from_checkpoint(checkpoint.load_checkpoint(args.checkpoint))
    shape = {
        k: v
        for k, v in (
            ("hidden_size", args.hidden),
            ("num_layers", args.layers),
            ("intermediate_size", args.intermediate),
            ("num_heads", args.heads),
            ("num_kv_heads", args.heads),
        )
        if v is not None
    }
    if shape:  # a fresh LLM of another shape around the checkpoint's vision encoder and tokenizer
        cfg = IllumeConfig(**{**parts.cfg.model_dump(), **shape})
        torch.manual_seed(args.seed)
        model = IllumeModel(cfg, parts.text_tokenizer.vocab_size)
        model.vision_model.load_state_dict(parts.model.vision_model.state_dict())
        parts = Parts(model, parts.semantic, parts.text_tokenizer, Processor(cfg, parts.text_tokenizer))
    codes = parts.model.gen_codes
    if codes is None:
        raise SystemExit("t2i_probe needs a pattern-tokenizer preset (tiny)")
    if args.plain:
        torch.nn.init.zeros_(codes.mask_pixels)
    elif not bool(codes.mask_pixels.abs().sum() > 0):
        codes.set_mask_pixels(parts.semantic.masks)
    b = BUDGETS["experiment"]
    weights = tuple(args.tag_weights) if args.tag_weights else None
    base = BaseCorpus(
        parts.cfg,
        CorpusSpec(
            args.seed,
            b.n_t2i,
            b.n_scenes,
            b.n_assess,
            t2i_tag_weights=weights,
            reading_order=args.reading_order == "on",
            distractors=CorpusSpec.distractors if args.distractors is None else tuple(args.distractors),
        ),
    )
    if args.recipe:
        recipe = get_recipe(args.recipe, parts.cfg.name, steps=max(1, args.steps), batch_size=args.batch)
        if args.optimizer:
            recipe = recipe.model_copy(update={"optimizer": args.optimizer})
    else:
        recipe = StageRecipe(
            name="t2i-probe",
            stage=2,
            purpose="text-to-image alone",
            lrs={"llm": args.lr, "adapter": args.lr},
            mix={"t2i": 1.0},
            steps=max(1, args.steps),
            batch_size=args.batch,
            warmup_steps=20,
            optimizer=args.optimizer or "adamw",
        )
    t0 = time.time()
    st = fit_stage(parts, recipe, base, seed=args.seed, precision=args.precision) if args.steps else None
    losses = st.losses if st else [float("nan")]
    train_s = time.time() - t0
    if args.save:
        save_model(parts.model, args.save)
    result = {
        "checkpoint": args.checkpoint,
        "pixels": not args.plain,
        "precision": args.precision,
        "recipe": args.recipe or "t2i-probe",
        "mix": recipe.mix,
        "lrs": recipe.lrs,
        "optimizer": recipe.optimizer,
        "t2i_per_tag": dict(collections.Counter(m.tag for m, _ in base.t2i)),
        "llm": {
            k: getattr(parts.model.cfg, k)
            for k in ("hidden_size", "num_layers", "intermediate_size", "num_heads")
        },
        "llm_params": sum(p.numel() for p in parts.model.llm.parameters()),
        "steps": args.steps,
        "batch": args.batch,
        "loss_first": round(losses[0], 3),
        "loss_last20": round(sum(losses[-20:]) / len(losses[-20:]), 3),
        "train_s": round(train_s, 1),
        "loss_by_100": [
            round(sum(losses[i : i + 100]) / len(losses[i : i + 100]), 3) for i in range(0, len(losses), 100)
        ],
        "judged": None if args.no_judge else judge_settings(parts, args.per_tag, args.images),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
