"""The base model against LLM training minutes: ShapesEval per tag, VQA and self-assessment
balanced accuracy, for the 64-token tiny preset and the 256-token tiny-256 side by side.

One seed. The understanding encoder is trained once and shared (both presets read the same
16x16 grid of 4-px cells); each preset then gets its own tokenizer (tiny: pattern masks fitted
by k-means; tiny-256: the semantic tokenizer), a fresh LLM, stages 0 and 1 at the experiment
budget's steps, and then stage 2's mix at a constant learning rate (after warmup) until the last
mark. At each mark of LLM training minutes (stages 0-2 on the clock, evaluations off it) the model
is saved and evaluated on ShapesEval's seen-composition prompts, held-out VQA questions, and its
own assessments of its ShapesEval images against the judge. Results append to a JSON-lines file
(one line per preset and mark) and `--plot` draws them. Usage (about 2 x (40 + evaluations) min):

    .venv/bin/python benchmarks/base_scaling.py --minutes 5 10 20 40 --out docs/base_scaling.jsonl
    .venv/bin/python benchmarks/base_scaling.py --plot docs/base_scaling.jsonl --png docs/base_scaling.png
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from illume_core.eval.evaluations import (
    agreement,
    assessment_confusion,
    balanced_accuracy,
    judge_rows,
    prompt_id,
    sample_items,
    shapeseval_prompts,
    tag_scores,
    vqa_items,
    vqa_scores,
)
from illume_core.model.config import get_preset
from illume_core.model.engine import Engine
from illume_core.settings import BUDGETS
from illume_core.train.data import BaseCorpus, CorpusSpec, StageData
from illume_core.train.loop import TrainConfig, train_loop
from illume_core.train.recipes import get_recipe
from illume_core.train.stages import fit_stage, init_model, save_stage, stage_groups
from illume_core.train.vision import train_encoder, train_tokenizer


class _Done(Exception):
    """Raised from the progress callback once the last mark is evaluated."""


def evaluate_parts(parts, per_tag: int, images: int, vqa: int) -> dict:
    """ShapesEval (seen compositions), VQA and self-assessment of in-memory parts."""
    with tempfile.TemporaryDirectory() as tmp:
        save_stage(parts, Path(tmp) / "ck", "snapshot")
        engine = Engine(Path(tmp) / "ck")
        prompts = shapeseval_prompts(per_tag)["eval"]
        meta = {prompt_id(m): m for m in prompts}
        samples = engine.sample(sample_items(prompts, images, 0))
        judgments = judge_rows(samples, meta)
        assessed = engine.assess(
            [{**s, "prompt": meta[s["prompt_id"]].prompt} for s in samples if s["sample_index"] == 0]
        )
        items = vqa_items(vqa, parts.cfg.image_size)
        answers = engine.ask(items)
    confusion = assessment_confusion(assessed, judgments)
    return {
        "shapeseval": {t: v for t, (v, _) in tag_scores(judgments).items()},
        "vqa": vqa_scores(items, answers)["overall"][0],
        "self_assessment_balanced": {d: v for d, (v, _) in balanced_accuracy(confusion).items()},
        "self_assessment_agreement": agreement(assessed, judgments)["overall"][0],
        "confusion": confusion,
    }


def run_preset(name: str, encoder, args, out: Path) -> None:
    cfg = get_preset(name)
    b = BUDGETS[args.budget]
    t0 = time.perf_counter()
    tok = train_tokenizer(cfg, encoder, b.tokenizer_steps if cfg.tokenizer == "pattern" else args.semantic_steps,
                          seed=args.seed, scenes=b.tokenizer_scenes)  # fmt: skip
    tok_s = time.perf_counter() - t0
    parts = init_model(cfg, tok, seed=args.seed, n_text=b.n_text)
    base = BaseCorpus(cfg, CorpusSpec(args.seed, b.n_t2i, b.n_scenes, b.n_assess))
    clock = {"train": 0.0}
    t = time.perf_counter()
    for stage in ("stage0", "stage1"):
        fit_stage(parts, get_recipe(stage, name, steps=b.stage_steps[stage]), base, seed=args.seed)
    clock["train"] += time.perf_counter() - t
    print(f"{name}: tokenizer {tok_s:.0f} s, stages 0-1 {clock['train']:.0f} s", flush=True)
    # stage 2's mix, constant lr after warmup, for as long as the last mark asks
    recipe = get_recipe("stage2", name, steps=10**6)
    groups = stage_groups(parts.model, recipe)
    data = StageData(base, parts.processor, parts.semantic.encode, recipe, args.seed)
    marks = sorted(args.minutes)
    state = {"last": time.perf_counter(), "step": 0}

    def progress(step: int, loss: float, lr: float) -> None:
        now = time.perf_counter()
        clock["train"] += now - state["last"]
        state["last"], state["step"] = now, step
        if marks and clock["train"] >= marks[0] * 60:
            mark = marks.pop(0)
            parts.model.eval()
            e0 = time.perf_counter()
            res = evaluate_parts(parts, args.per_tag, args.images, args.vqa)
            row = {"preset": name, "minutes": mark, "train_s": round(clock["train"], 1),
                   "stage2_steps": step, "loss": round(loss, 4), "eval_s": round(time.perf_counter() - e0, 1),
                   "seed": args.seed, **res}  # fmt: skip
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps({k: row[k] for k in ("preset", "minutes", "stage2_steps", "loss")})
                  + f" shapeseval {res['shapeseval'].get('overall', 0):.3f} vqa {res['vqa']:.3f}", flush=True)  # fmt: skip
            parts.model.train()
            state["last"] = time.perf_counter()  # evaluation time is off the clock
            if not marks:
                raise _Done

    cfg_train = TrainConfig(
        steps=10**6, warmup_steps=recipe.warmup_steps, min_lr_ratio=1.0, optimizer=recipe.optimizer
    )
    try:
        train_loop(
            parts.model, groups, data, cfg_train, loss_fn=lambda m, batch: m(batch).loss, progress=progress
        )
    except _Done:
        pass


def plot(path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for preset in sorted({r["preset"] for r in rows}):
        rs = sorted((r for r in rows if r["preset"] == preset), key=lambda r: r["minutes"])
        x = [r["minutes"] for r in rs]
        axes[0].plot(x, [r["shapeseval"].get("overall", 0) for r in rs], "o-", label=preset)
        axes[1].plot(x, [r["vqa"] for r in rs], "o-", label=preset)
        axes[2].plot(x, [r["self_assessment_balanced"].get("overall", 0) for r in rs], "o-", label=preset)
    for ax, title in zip(
        axes, ("ShapesEval overall", "VQA accuracy", "self-assessment balanced acc."), strict=True
    ):
        ax.set_title(title)
        ax.set_xlabel("LLM training minutes (2 cores)")
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "tiny-256"])
    ap.add_argument("--minutes", nargs="+", type=float, default=[5, 10, 20, 40])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-tag", type=int, default=10, help="ShapesEval prompts per tag at each mark")
    ap.add_argument("--images", type=int, default=2, help="images per prompt")
    ap.add_argument("--vqa", type=int, default=100)
    ap.add_argument("--encoder-steps", type=int, default=BUDGETS["experiment"].encoder_steps)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--budget", default="experiment", help="whose stage 0-1 steps, corpus and tokenizer fit to use"
    )
    ap.add_argument("--semantic-steps", type=int, default=500, help="tiny-256's tokenizer training steps")
    ap.add_argument("--out", type=Path, default=Path("docs/base_scaling.jsonl"))
    ap.add_argument("--plot", type=Path, help="only draw this JSON-lines file")
    ap.add_argument("--png", type=Path, default=Path("docs/base_scaling.png"))
    args = ap.parse_args()
    if args.plot:
        plot(args.plot, args.png)
        return
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    encoder = train_encoder(get_preset(args.presets[0]), args.encoder_steps, 64, args.seed)
    print(f"shared encoder: {args.encoder_steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
    for name in args.presets:
        run_preset(name, encoder, args, args.out)
    plot(args.out, args.png)


if __name__ == "__main__":
    main()
