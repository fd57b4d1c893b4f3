"""Evaluations: ShapesEval (GenEval on ShapesWorld), VQA accuracy, and self-assessment agreement.

ShapesEval is a fixed GenEval-format prompt set (all six tags, 4 images per prompt) drawn from
its own seed, split into compositions seen in training (`eval`) and held-out compositions
(`heldout`); images are scored by the independent judge. VQA asks questions about held-out
scenes. Agreement compares the model's assessment of an image with the judge's, per dimension.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence

from illume_core import corpus
from illume_core.assessment import DIMENSIONS
from illume_core.engine import sample_seed
from illume_core.geneval import TAGS, Metadata
from illume_core.images import from_png, png_bytes
from illume_core.prompts import Holdout, generate_prompts
from illume_core.world import render, sample_scene

SHAPESEVAL_SEED = 7_000_001  # never used for training data
VQA_SEED = 7_000_002


def prompt_id(meta: Metadata) -> str:
    """A stable id of a prompt: the digest of its metadata line."""
    return hashlib.sha256(meta.dumps().encode()).hexdigest()[:12]


def shapeseval_prompts(per_tag: int = 20, holdout: Holdout | None = None) -> dict[str, list[Metadata]]:
    """The fixed ShapesEval prompt sets: {'eval': seen compositions, 'heldout': held-out ones}."""
    holdout = holdout or Holdout.default()
    return {
        "eval": generate_prompts(SHAPESEVAL_SEED, per_tag, holdout=holdout, split="train"),
        "heldout": generate_prompts(SHAPESEVAL_SEED, per_tag, holdout=holdout, split="heldout"),
    }


def sample_items(prompts: Iterable[Metadata], images_per_prompt: int, round: int) -> list[dict]:
    """Sampling requests: one per (prompt, sample index), with the deterministic seed."""
    items = []
    for m in prompts:
        pid = prompt_id(m)
        for k in range(images_per_prompt):
            items.append(
                {"prompt_id": pid, "prompt": m.prompt, "sample_index": k, "seed": sample_seed(round, pid, k)}
            )
    return items


def judge_rows(samples: Sequence[dict], metadata: dict[str, Metadata]) -> list[dict]:
    """Judgment rows (correct, reason, details and <dim>_ok with per-dimension truth) for sample rows."""
    from illume_core.judge import judge_image

    out = []
    for s in samples:
        meta = metadata[s["prompt_id"]]
        try:
            j = judge_image(from_png(s["png"]), meta)
            correct, reason, details = j.correct, j.reason, {**j.details, "dimensions": j.dimensions}
        except ValueError as e:  # an undecodable image is a failed sample, recorded as such
            correct, reason, details = (
                False,
                f"image could not be read: {e}",
                {"dimensions": dict.fromkeys(DIMENSIONS, False)},
            )
        out.append(
            {
                "prompt_id": s["prompt_id"],
                "sample_index": s["sample_index"],
                "tag": meta.tag,
                "correct": bool(correct),
                "reason": reason,
                "details": json.dumps(details),
                # the same truths as plain columns: the agreement view reads these, not the JSON
                **{f"{d}_ok": details["dimensions"].get(d) for d in DIMENSIONS},
            }
        )
    return out


def tag_scores(judgments: Sequence[dict]) -> dict[str, tuple[float, int]]:
    """{tag: (accuracy, n)} plus 'overall' = unweighted mean of the tags present (GenEval)."""
    by_tag: dict[str, list[bool]] = defaultdict(list)
    for j in judgments:
        by_tag[j["tag"]].append(bool(j["correct"]))
    out = {t: (sum(v) / len(v), len(v)) for t in TAGS if (v := by_tag.get(t))}
    if out:
        out["overall"] = (sum(a for a, _ in out.values()) / len(out), sum(n for _, n in out.values()))
    return out


def vqa_items(n: int = 200, size: int = 64, seed: int = VQA_SEED) -> list[dict]:
    """Held-out VQA questions: {id, png, question, answer, kind}."""
    rng = random.Random(seed)
    items = []
    while len(items) < n:
        scene = sample_scene(rng, size)
        qa = rng.choice(corpus.vqa_pairs(scene, rng))
        items.append(
            {
                "id": f"vqa{len(items)}",
                "png": png_bytes(render(scene)),
                "question": qa.question,
                "answer": qa.answer,
                "kind": qa.kind,
            }
        )
    return items


def _norm(text: str) -> str:
    return " ".join(text.lower().replace(".", " ").split())


def vqa_scores(items: Sequence[dict], answers: Sequence[dict]) -> dict[str, tuple[float, int]]:
    """{question kind: (exact-match accuracy, n)} plus 'overall' over all questions."""
    by_id = {a["id"]: a["answer"] for a in answers}
    by_kind: dict[str, list[bool]] = defaultdict(list)
    for it in items:
        ok = _norm(by_id.get(it["id"], "")) == _norm(it["answer"])
        by_kind[it["kind"]].append(ok)
        by_kind["overall"].append(ok)
    return {k: (sum(v) / len(v), len(v)) for k, v in by_kind.items()}


def agreement(assessments: Sequence[dict], judgments: Sequence[dict]) -> dict[str, tuple[float, int]]:
    """Per dimension: how often the assessor's verdict equals the judge's truth ('overall' too).

    An unparsed verdict counts as a disagreement: a model that cannot say is not agreeing.
    """
    truth = {
        (j["prompt_id"], j["sample_index"]): json.loads(j["details"]).get("dimensions", {}) for j in judgments
    }
    hits: dict[str, list[bool]] = defaultdict(list)
    for a in assessments:
        t = truth.get((a["prompt_id"], a["sample_index"]))
        if t is None:
            continue
        for d in DIMENSIONS:
            v = a.get(f"{d}_verdict")
            ok = v in ("yes", "no") and (v == "yes") == bool(t.get(d, True))
            hits[d].append(ok)
            hits["overall"].append(ok)
    return {d: (sum(v) / len(v), len(v)) for d, v in hits.items()}


def evaluation_rows(
    round: int,
    checkpoint_id: str,
    benchmark: str,
    split: str,
    metric: str,
    scores: dict[str, tuple[float, int]],
) -> list[dict]:
    """Rows for the lake's `evaluations` table."""
    return [
        {
            "round": round,
            "checkpoint_id": checkpoint_id,
            "benchmark": benchmark,
            "split": split,
            "tag": tag,
            "metric": metric,
            "value": float(v),
            "n": int(n),
        }
        for tag, (v, n) in scores.items()
    ]
