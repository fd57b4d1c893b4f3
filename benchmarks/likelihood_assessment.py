"""How well does the model judge its own drawings? Text self-assessment against likelihood
self-assessment (illume_core/self_enhance/likelihood.py), both scored against the judge.

From a checkpoint, draws `--images` images for each of `--per-tag` tuning prompts per tag on two
disjoint prompt sets (never the ShapesEval prompts): a calibration set (`--calibrate-seed`) on
which each dimension's margin is chosen (the margin that maximizes that dimension's balanced
accuracy, among `--margins`), and an evaluation set (`--eval-seed`) on which both assessors are
scored. Prints JSON: per dimension the balanced accuracy and confusion counts of the text
assessor (`Engine.assess`, the understanding path), and of the likelihood assessor at margin 0,
at its default margins (`LikelihoodMargins()`) and at the margins calibrated here; and the seconds per image of each.
It also reports acceptance, what a round's `accepted_t2i` would train on (images with four "yes"
verdicts: how many, the judge's precision and recall among them), for the default margins shifted
by `SHIFTS` nats, and chooses on the calibration set the smallest shift that accepts `RECALL`
(0.8) of the images the judge passes (`accepting_margins`: `illume round --likelihood-margins`).

    .venv/bin/python benchmarks/likelihood_assessment.py --checkpoint LAKE/checkpoints/<id> --per-tag 20
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from illume_core.eval import evaluations as ev
from illume_core.model.engine import Engine
from illume_core.self_enhance.likelihood import LikelihoodMargins, assess_by_likelihood
from illume_core.world.prompts import generate_prompts
from illume_core.world.rules import DIMENSIONS

CALIBRATE_SEED = 424_242  # the tuning prompts of benchmarks/sampling_sweep.py
EVAL_SEED = 515_151


def _draw(engine: Engine, seed: int, per_tag: int, images: int) -> tuple[list[dict], list[dict], dict]:
    metas = generate_prompts(seed=seed, per_tag=per_tag)
    meta = {ev.prompt_id(m): m for m in metas}
    samples = engine.sample(ev.sample_items(metas, images, round=seed))
    return samples, ev.judge_rows(samples, meta), meta


def _likelihood(engine: Engine, samples: list[dict], meta: dict) -> list[dict[str, float]]:
    codes = torch.tensor([s["image_tokens"] for s in samples])
    metas = [meta[s["prompt_id"]] for s in samples]
    return [g for _, g in assess_by_likelihood(engine.model, engine.parts.processor, metas, codes)]


def _rows(samples: list[dict], gains: list[dict[str, float]], margins: LikelihoodMargins) -> list[dict]:
    return [
        {
            "prompt_id": s["prompt_id"],
            "sample_index": s["sample_index"],
            **{f"{d}_verdict": "no" if g[d] > getattr(margins, d) else "yes" for d in DIMENSIONS},
        }
        for s, g in zip(samples, gains, strict=True)
    ]


def _figures(rows: list[dict], judgments: list[dict]) -> dict:
    confusion = ev.assessment_confusion(rows, judgments)
    return {
        "balanced": {d: round(v, 3) for d, (v, _) in ev.balanced_accuracy(confusion).items()},
        "confusion": confusion,
    }


SHIFTS = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)  # nats added to every default margin
RECALL = 0.8  # the share of the judge's passes that acceptance-oriented margins must accept


def _acceptance(rows: list[dict], judgments: list[dict]) -> dict:
    """What a round's `accepted_t2i` would train on: the images with four "yes" verdicts, how many,
    and how many of them the judge passes (precision) of all it passes (recall)."""
    correct = {(j["prompt_id"], j["sample_index"]): bool(j["correct"]) for j in judgments}
    accepted = [r for r in rows if all(r[f"{d}_verdict"] == "yes" for d in DIMENSIONS)]
    good = sum(correct[(r["prompt_id"], r["sample_index"])] for r in accepted)
    n_correct = sum(correct.values())
    return {
        "images": len(rows),
        "accepted": len(accepted),
        "accepted_correct": good,
        "precision": round(good / len(accepted), 3) if accepted else None,
        "recall": round(good / n_correct, 3) if n_correct else None,
        "net": good - (len(accepted) - good),  # correct minus wrong images a round would train on
    }


def _shifted(shift: float) -> LikelihoodMargins:
    d = LikelihoodMargins()
    return LikelihoodMargins(**{k: getattr(d, k) + shift for k in DIMENSIONS})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--per-tag", type=int, default=20)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--calibrate-seed", type=int, default=CALIBRATE_SEED)
    ap.add_argument("--eval-seed", type=int, default=EVAL_SEED)
    ap.add_argument("--margins", default="-8,-6,-4,-3,-2,-1,-0.5,0,0.5,1", help="candidate margins (nats)")
    ap.add_argument("--no-text", action="store_true", help="skip the text assessor")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engine = Engine(args.checkpoint)
    out: dict = {"checkpoint": args.checkpoint, **{k: v for k, v in vars(args).items() if k != "checkpoint"}}

    # calibration: per dimension, the margin with the best balanced accuracy
    cal_samples, cal_judged, cal_meta = _draw(engine, args.calibrate_seed, args.per_tag, args.images)
    cal_gains = _likelihood(engine, cal_samples, cal_meta)
    candidates = [float(m) for m in args.margins.split(",")]
    by_margin = {m: _figures(_rows(cal_samples, cal_gains, LikelihoodMargins(**dict.fromkeys(DIMENSIONS, m))), cal_judged)
                 for m in candidates}  # fmt: skip
    chosen = {
        d: max(candidates, key=lambda m, d=d: (by_margin[m]["balanced"].get(d, 0), -abs(m)))
        for d in DIMENSIONS
    }
    # acceptance: the smallest shift of the default margins that accepts RECALL of the images the
    # judge passes. Recall first, because a round's gain follows how many images it accepts more
    # than their precision (docs/RESULTS_run5.md: accepting every image gained as much as the judge)
    cal_accept = {sh: _acceptance(_rows(cal_samples, cal_gains, _shifted(sh)), cal_judged) for sh in SHIFTS}
    best_shift = next((sh for sh in SHIFTS if (cal_accept[sh]["recall"] or 0) >= RECALL), SHIFTS[-1])
    out["calibration"] = {
        "judged": {t: round(v, 3) for t, (v, _) in ev.tag_scores(cal_judged).items()},
        "balanced_by_margin": {str(m): f["balanced"] for m, f in by_margin.items()},
        "chosen_margins": chosen,
        "acceptance_by_shift": {str(sh): a for sh, a in cal_accept.items()},
        "chosen_shift": best_shift,
        "accepting_margins": _shifted(best_shift).model_dump(),
    }

    # evaluation on other prompts
    samples, judged, meta = _draw(engine, args.eval_seed, args.per_tag, args.images)
    out["eval_judged"] = {t: round(v, 3) for t, (v, _) in ev.tag_scores(judged).items()}
    t0 = time.time()
    gains = _likelihood(engine, samples, meta)
    out["likelihood_s_per_image"] = round((time.time() - t0) / len(samples), 4)
    out["likelihood_margin0"] = _figures(
        _rows(samples, gains, LikelihoodMargins(**dict.fromkeys(DIMENSIONS, 0.0))), judged
    )
    out["likelihood_default"] = _figures(_rows(samples, gains, LikelihoodMargins()), judged)
    out["likelihood_calibrated"] = _figures(_rows(samples, gains, LikelihoodMargins(**chosen)), judged)
    out["acceptance"] = {
        "judge": _acceptance([{**j, **{f"{d}_verdict": "yes" if j["correct"] else "no" for d in DIMENSIONS}}
                              for j in judged], judged),
        **{f"shift {sh:g}": _acceptance(_rows(samples, gains, _shifted(sh)), judged) for sh in SHIFTS},
    }  # fmt: skip
    if not args.no_text:
        t0 = time.time()
        texts = engine.assess([{**s, "prompt": meta[s["prompt_id"]].prompt} for s in samples])
        out["text_s_per_image"] = round((time.time() - t0) / len(samples), 4)
        out["text"] = _figures(texts, judged)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
