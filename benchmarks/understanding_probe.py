"""Does the LLM read the image? Understanding training from a checkpoint, then held-out figures.

From a checkpoint (a lake's stage-0 checkpoint, or a later one), optionally runs stage 1 at the
recipe's learning rates for `--stage1-steps`, then `--steps` steps of an understanding mix
(`--mix`, default VQA, captions and assessment) with the adapter and the LLM at `--lr`, and
prints as JSON:

- VQA exact-match accuracy per question kind on 200 held-out questions (`eval.evaluations.vqa_items`);
- the image-use gaps: the VQA and reconstruction losses with each example's own image against
  the same examples with the images shuffled among them (0: the output ignores the image);
- the adapter output's norm beside a token embedding's;
- self-assessment of rendered scenes that fit or break their prompt (half and half, a seed the
  corpus never draws): per-dimension balanced accuracy and confusion counts.

    .venv/bin/python benchmarks/understanding_probe.py --checkpoint LAKE/checkpoints/<stage-2 id> \\
        --stage1-steps 0 --steps 600 --mix vqa=1.0

`--optimizer muon` trains the understanding mix with Muon on the LLM's hidden matrices
(`train.loop.MuonAdamW`, as stage 2 does) instead of AdamW.

`--recipe stage3` trains every group at stage 3's learning rates instead of `--lr`, and `--draw N`
also draws N tuning prompts per tag (2 images each; `generate_prompts(seed=424242)`, never the
ShapesEval prompts), judges them, and scores the model's assessments of its own drawings against
the judge: what a longer, understanding-heavy stage 3 does to both sides.

`--edits N` also scores N held-out editing tasks against their target scenes (the pipeline's
`edit_items`); with `--mix edit=1.0` it asks whether editing is learnable from either input path.

`--image-input codes` shows the LLM each input image as its own discrete codes (`<soi>` + the
tokenizer's 64 codes + `<eoi>`, embedded by the rows the model draws with) instead of the encoder's
continuous features, in training and at inference alike: does the LLM read an image it can
already draw faster than one it sees through the adapter? (A probe: the pipeline's model keeps
ILLUME's continuous path.)

The adapter-norm and multi-turn arms of docs/BASE_MODEL.md section 9 ran this script at commits
61b2eb4 (`--adapter-norm on|off`) and 764d676 (`--turns 8`); neither lever was kept.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch

from illume_core.eval.evaluations import (
    assessment_confusion,
    balanced_accuracy,
    edit_items,
    edit_scores,
    judge_rows,
    prompt_id,
    sample_items,
    tag_scores,
    vqa_items,
    vqa_scores,
)
from illume_core.model.checkpoint import load_checkpoint
from illume_core.model.engine import Engine
from illume_core.model.images import from_png, png_bytes
from illume_core.model.processor import IGNORE_INDEX, Example, Processor
from illume_core.settings import BUDGETS
from illume_core.train.data import BaseCorpus, CorpusSpec
from illume_core.train.recipes import StageRecipe, get_recipe
from illume_core.train.stages import Parts, fit_stage
from illume_core.world import corpus
from illume_core.world.prompts import generate_prompts
from illume_core.world.scenes import render

ASSESS_SEED = 777_001
PROMPT_SEED = 424_242  # the tuning prompts of benchmarks/sampling_sweep.py, never ShapesEval's  # the probe's assessment scenes (the corpus seeds its own by run seed)


class CodesProcessor(Processor):
    """A Processor that writes each input image as its own codes between <soi> and <eoi> (the
    generation path's input rows) instead of continuous-feature placeholders."""

    def __init__(self, base: Processor, encode) -> None:
        super().__init__(base.cfg, base.tokenizer)
        self.encode = encode
        self._cache: dict[bytes, list[int]] = {}

    def _codes(self, image) -> list[int]:
        x = self._pixels(image)
        key = x.numpy().tobytes()
        if key not in self._cache:
            with torch.no_grad():
                codes = self.encode(x[None])[0]  # (N,)
            self._cache[key] = self.code_ids(codes).tolist()
        return self._cache[key]

    def _prompt(self, template: str, images) -> Example:
        ids = [self.tokenizer.bos_id, *self.tokenizer.encode(template)]
        if ids.count(self.tokenizer.image_id) != len(images):
            raise ValueError("one image per <image> placeholder")
        out: list[int] = []
        seen = iter(images)
        for i in ids:
            if i == self.tokenizer.image_id:
                out += [self.tokenizer.soi_id, *self._codes(next(seen)), self.tokenizer.eoi_id]
            else:
                out.append(i)
        return Example(out, [IGNORE_INDEX] * len(out), [])


@torch.no_grad()
def image_use(parts: Parts, items: list[dict]) -> dict:
    """VQA and reconstruction losses with the true images and with the images shuffled among the
    examples; the gap (shuffled - true) is 0 when the answer does not depend on the image."""
    proc, model = parts.processor, parts.model.eval()
    images = [from_png(it["png"]) for it in items]
    codes = parts.semantic.encode(torch.stack([proc._pixels(im) for im in images]))  # (I, N)
    order = random.Random(0).sample(range(len(items)), len(items))
    out = {}
    for name, idx in (("true", range(len(items))), ("shuffled", order)):
        vqa = [proc.vqa(images[j], it["question"], it["answer"]) for j, it in zip(idx, items, strict=True)]
        rec = [proc.reconstruction(images[j], codes[i]) for i, j in enumerate(idx)]
        out[f"vqa_{name}"] = model(proc.collate(vqa)).loss.item()
        out[f"reconstruct_{name}"] = model(proc.collate(rec)).loss.item()
    out["vqa_gap"] = out["vqa_shuffled"] - out["vqa_true"]
    out["reconstruct_gap"] = out["reconstruct_shuffled"] - out["reconstruct_true"]
    return {k: round(v, 4) for k, v in out.items()}


def in_memory_engine(parts: Parts) -> Engine:
    """An Engine over parts in memory (the probe's model need not fit a saved preset)."""
    engine = Engine.__new__(Engine)
    engine.parts, engine.device, engine.checkpoint, engine.checkpoint_id = parts, "cpu", "in-memory", "probe"
    engine.cfg = parts.cfg
    return engine


def assessment_items(n: int, size: int) -> list[dict]:
    rng = random.Random(ASSESS_SEED)
    items = []
    for i in range(n):
        ex = corpus.assessment_example(rng, size, p_correct=0.5)
        items.append({"prompt_id": f"a{i}", "sample_index": 0, "prompt": ex.meta.prompt,
                      "png": png_bytes(render(ex.scene)), "truth": ex.evaluation.dimensions})  # fmt: skip
    return items


def assessment_figures(engine: Engine, items: list[dict]) -> dict:
    answers = engine.assess([{k: v for k, v in it.items() if k != "truth"} for it in items])
    # the scenes' own truth, in the shape of judge rows
    truth = [{**it, "details": json.dumps({"dimensions": it["truth"]})} for it in items]
    confusion = assessment_confusion(answers, truth)
    return {
        "balanced": {d: round(v, 3) for d, (v, _) in balanced_accuracy(confusion).items()},
        "confusion": confusion,
    }


def own_images(engine: Engine, per_tag: int) -> dict:
    """The judge on the model's drawings of tuning prompts (never ShapesEval's), and the model's
    assessments of those drawings against the judge (balanced accuracy and confusion counts)."""
    prompts = generate_prompts(seed=PROMPT_SEED, per_tag=per_tag)
    meta = {prompt_id(m): m for m in prompts}
    samples = engine.sample(sample_items(prompts, 2, 0))
    judgments = judge_rows(samples, meta)
    assessed = engine.assess([{**s, "prompt": meta[s["prompt_id"]].prompt} for s in samples])
    confusion = assessment_confusion(assessed, judgments)
    return {
        "judged": {t: round(v, 3) for t, (v, _) in tag_scores(judgments).items()},
        "balanced": {d: round(v, 3) for d, (v, _) in balanced_accuracy(confusion).items()},
        "confusion": confusion,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="a stage-0 checkpoint, or a later one")
    ap.add_argument("--stage1-steps", type=int, default=100)
    ap.add_argument("--steps", type=int, default=300, help="steps of the understanding mix after stage 1")
    ap.add_argument("--mix", default="vqa=0.6,caption=0.2,assess=0.2")
    ap.add_argument("--lr", type=float, default=1.5e-3, help="adapter and LLM, after stage 1")
    ap.add_argument(
        "--recipe",
        default=None,
        help="take the learning rates (all groups) of this stage recipe instead of --lr",
    )
    ap.add_argument(
        "--draw",
        type=int,
        default=0,
        help="also draw N tuning prompts per tag (2 images each), judge them, "
        "and score the model's assessments of its own images against the judge",
    )
    ap.add_argument(
        "--optimizer",
        choices=["adamw", "muon"],
        default="adamw",
        help="optimizer of the understanding mix (muon: train.loop.MuonAdamW)",
    )
    ap.add_argument("--batch", type=int, default=32, help="batch size of the understanding mix")
    ap.add_argument(
        "--image-input",
        choices=["features", "codes"],
        default="features",
        help="how the LLM sees an input image: the adapter's continuous features (the pipeline's "
        "way) or the image's own codes, as the drawer's input rows",
    )
    ap.add_argument("--assess-items", type=int, default=200)
    ap.add_argument(
        "--edits",
        type=int,
        default=0,
        help="also run N held-out editing tasks (eval.evaluations.edit_items, the pipeline's) and "
        "judge each output against its target scene",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    parts = Parts.from_checkpoint(load_checkpoint(args.checkpoint))
    if args.image_input == "codes":
        parts.processor = CodesProcessor(parts.processor, parts.semantic.encode)
    b = BUDGETS["experiment"]
    base = BaseCorpus(parts.cfg, CorpusSpec(args.seed, b.n_t2i, b.n_scenes, b.n_assess))
    items = vqa_items(200, parts.cfg.image_size)
    result: dict = {
        "checkpoint": args.checkpoint,
        **{k: v for k, v in vars(args).items() if k != "checkpoint"},
    }
    t0 = time.time()
    if args.stage1_steps:
        st = fit_stage(
            parts, get_recipe("stage1", parts.cfg.name, steps=args.stage1_steps), base, seed=args.seed
        )
        result["stage1_loss_last20"] = round(sum(st.losses[-20:]) / len(st.losses[-20:]), 3)
        result["after_stage1"] = {"image_use": image_use(parts, items[:64])}
    mix = {k: float(v) for k, v in (kv.split("=") for kv in args.mix.split(","))}
    if args.steps:
        lrs = (
            get_recipe(args.recipe, parts.cfg.name).lrs
            if args.recipe
            else {"llm": args.lr, "adapter": args.lr}
        )
        recipe = StageRecipe(name="understanding-probe", stage=3 if "vision" in lrs else 2,
                             purpose="understanding mix", lrs=lrs, mix=mix, steps=args.steps, warmup_steps=20, batch_size=args.batch,
                             optimizer=args.optimizer)  # fmt: skip
        st = fit_stage(parts, recipe, base, seed=args.seed)
        result["loss_by_100"] = [round(sum(st.losses[i : i + 100]) / len(st.losses[i : i + 100]), 3)
                                 for i in range(0, len(st.losses), 100)]  # fmt: skip
    result["train_s"] = round(time.time() - t0, 1)
    model = parts.model.eval()
    with torch.no_grad():
        feats = model.aligner(
            model.vision_model(torch.zeros(1, 3, parts.cfg.image_size, parts.cfg.image_size))
        )
        result["adapter_norm_mean"] = round(feats.norm(dim=-1).mean().item(), 3)
        result["token_embedding_norm_mean"] = round(
            model.llm.get_input_embeddings().weight.norm(dim=-1).mean().item(), 3
        )
    result["image_use"] = image_use(parts, items[:64])
    engine = in_memory_engine(parts)
    answers = engine.ask(items)
    result["vqa"] = {k: round(v, 3) for k, (v, _) in vqa_scores(items, answers).items()}
    result["assessment"] = assessment_figures(
        engine, assessment_items(args.assess_items, parts.cfg.image_size)
    )
    if args.draw:
        result["own_images"] = own_images(engine, args.draw)
    if args.edits:
        edits = edit_items(args.edits, parts.cfg.image_size)
        result["editing"] = {k: round(v, 3) for k, (v, _) in edit_scores(edits, engine.edit(edits)).items()}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
