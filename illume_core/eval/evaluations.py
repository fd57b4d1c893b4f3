"""Evaluations: ShapesEval (GenEval on ShapesWorld), VQA accuracy, self-assessment agreement and
balanced accuracy, and editing accuracy.

ShapesEval is a fixed GenEval-format prompt set (all six tags, 4 images per prompt) drawn from
its own seed, split into compositions seen in training (`eval`) and held-out compositions
(`heldout`); images are scored by the independent judge. VQA asks questions about held-out
scenes. Agreement compares the model's assessment of an image with the judge's, per dimension;
balanced accuracy does the same with each truth weighted equally, so that a constant answer
scores 0.5. Editing gives the model held-out scenes and instructions and judges the image it
draws against the target scene, which the world knows.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence

from illume_core.model.engine import sample_seed
from illume_core.model.images import from_png, png_bytes
from illume_core.self_enhance.assessment import DIMENSIONS
from illume_core.world import corpus
from illume_core.world.geneval import TAGS, Metadata
from illume_core.world.prompts import Holdout, generate_prompts
from illume_core.world.scenes import render, sample_scene

SHAPESEVAL_SEED = 7_000_001  # never used for training data
VQA_SEED = 7_000_002
EDIT_SEED = 7_000_003
# an edited object may sit this far (as a fraction of the canvas) from where the target has it:
# a drawn box is rarely exact, while a move is at least 10% of the canvas (corpus._moved)
EDIT_POSITION_TOL = 0.08


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
    """Sampling requests: one per (prompt, sample index), with the deterministic seed.

    A prompt listed again (a tag whose space is smaller than its prompt count repeats prompts,
    see `generate_prompts`) continues its sample indices: its j-th listing draws indices
    j*K .. j*K+K-1, so every request is a distinct image, and no image is drawn or judged twice.
    """
    items = []
    seen: dict[str, int] = {}
    for m in prompts:
        pid = prompt_id(m)
        first = seen.get(pid, 0)
        seen[pid] = first + images_per_prompt
        for k in range(first, first + images_per_prompt):
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


def extra_objects(named: int, details: dict) -> int:
    """How many objects (shapes and unknown blobs) the judge found in a drawing beyond the `named`
    ones its prompt asks for (a judgment's `details`); negative when some are missing."""
    return len(details["objects"]) + len(details.get("unknown", [])) - named


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


def assessment_confusion(assessments: Sequence[dict], judgments: Sequence[dict]) -> dict[str, dict[str, int]]:
    """Per dimension, the assessor's yes/no against the judge's truth: counts of true_yes (said
    yes, truly yes), false_yes, true_no, false_no, and unparsed (no verdict, either truth)."""
    truth = {
        (j["prompt_id"], j["sample_index"]): json.loads(j["details"]).get("dimensions", {}) for j in judgments
    }
    out = {
        d: dict.fromkeys(("true_yes", "false_yes", "true_no", "false_no", "unparsed"), 0) for d in DIMENSIONS
    }
    for a in assessments:
        t = truth.get((a["prompt_id"], a["sample_index"]))
        if t is None:
            continue
        for d in DIMENSIONS:
            v, ok = a.get(f"{d}_verdict"), bool(t.get(d, True))
            key = "unparsed" if v not in ("yes", "no") else f"{'true' if (v == 'yes') == ok else 'false'}_{v}"
            out[d][key] += 1
    return out


def balanced_accuracy(confusion: dict[str, dict[str, int]]) -> dict[str, tuple[float, int]]:
    """Per dimension: the mean of the recall on truly-correct and on truly-wrong images (an
    unparsed verdict counts as a miss); 0.5 for a constant answer. A dimension whose images are
    all one truth gets that truth's recall alone. 'overall' is the mean over dimensions."""
    out: dict[str, tuple[float, int]] = {}
    for d, c in confusion.items():
        pos = c["true_yes"] + c["false_no"]  # truly correct
        neg = c["true_no"] + c["false_yes"]  # truly wrong
        n = pos + neg + c["unparsed"]
        if n == 0:
            continue
        # unparsed verdicts are split between the two truths in proportion: both recalls lose them
        share = pos / (pos + neg) if pos + neg else 0.5
        pos_n, neg_n = pos + c["unparsed"] * share, neg + c["unparsed"] * (1 - share)
        recalls = [
            r
            for r in (c["true_yes"] / pos_n if pos_n else None, c["true_no"] / neg_n if neg_n else None)
            if r is not None
        ]
        out[d] = (sum(recalls) / len(recalls), n)
    if out:
        out["overall"] = (sum(v for v, _ in out.values()) / len(out), sum(n for _, n in out.values()))
    return out


def confusion_rows(
    round: int,
    checkpoint_id: str,
    split: str,
    confusion: dict[str, dict[str, int]],
    benchmark: str = "self_assessment",
) -> list[dict]:
    """The confusion counts as `evaluations` rows: metric = the count's name, tag = the dimension."""
    return [
        row
        for d, c in confusion.items()
        for k, v in c.items()
        for row in evaluation_rows(round, checkpoint_id, benchmark, split, k, {d: (v, sum(c.values()))})
    ]


def edit_items(n: int = 100, size: int = 64, seed: int = EDIT_SEED) -> list[dict]:
    """Held-out editing tasks: {id, png (source), instruction, kind, seed, target (JSON objects)}."""
    rng = random.Random(seed)
    items = []
    while len(items) < n:
        pair = corpus.edit_pair(None, rng, size)
        items.append(
            {
                "id": f"edit{len(items)}",
                "png": png_bytes(render(pair.source)),
                "instruction": pair.instruction,
                "kind": pair.kind,
                "seed": seed + len(items),
                "target": json.dumps([o.__dict__ for o in pair.target.objects]),
            }
        )
    return items


def edit_correct(objects: Sequence, target: Sequence[dict], size: int) -> bool:
    """Whether detected objects (shape, colour, box) are the target's composition: the same
    (shape, colour) objects, one for one, each within EDIT_POSITION_TOL of the canvas of its
    target's centre; blobs of no shape are left to the caller (they make the image wrong)."""
    if len(objects) != len(target):
        return False
    tol = EDIT_POSITION_TOL * size
    left = [dict(t) for t in target]
    for o in objects:
        cx, cy = (o.box[0] + o.box[2]) / 2, (o.box[1] + o.box[3]) / 2
        best, dist = None, None
        for t in left:
            if (t["shape"], t["color"]) != (o.shape, o.color):
                continue
            d = max(abs(cx - (t["x"] + t["s"] / 2)), abs(cy - (t["y"] + t["s"] / 2)))
            if dist is None or d < dist:
                best, dist = t, d
        if best is None or dist > tol:
            return False
        left.remove(best)
    return True


def edit_scores(items: Sequence[dict], outputs: Sequence[dict]) -> dict[str, tuple[float, int]]:
    """{edit kind: (accuracy, n)} plus 'overall': each output judged against its target scene."""
    from illume_core.judge import detect

    by_id = {o["id"]: o for o in outputs}
    by_kind: dict[str, list[bool]] = defaultdict(list)
    for it in items:
        out = by_id.get(it["id"])
        ok = False
        if out is not None:
            try:
                img = from_png(out["png_out"])
                found = detect(img)
                ok = not found.unknown and edit_correct(found.objects, json.loads(it["target"]), img.size[0])
            except ValueError:
                ok = False
        by_kind[it["kind"]].append(ok)
        by_kind["overall"].append(ok)
    return {k: (sum(v) / len(v), len(v)) for k, v in by_kind.items()}
