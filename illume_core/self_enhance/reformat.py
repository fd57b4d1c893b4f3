"""Reformatting a round's assessments into training data (ILLUME's self-enhancement step 3).

Strategies, which combine:
- `assessment` (ILLUME): a good image gives a one-turn assessment dialogue; a bad one gives
  the assessment, then a correction turn whose answer is an image of the same prompt that the
  assessor accepted (when the round drew one), so the model learns what it should have drawn.
- `accepted_t2i`: images the assessor judged right on every dimension become text-to-image pairs.
- `balanced_t2i`: the same pairs, each repeated so that every GenEval tag brings about as many
  as the tag with the most accepted images (at most `MAX_REPEATS` copies): the model accepts
  more of its easy drawings (single objects, colours) than of its hard ones (counting,
  position), and a round should not teach mostly what it already draws well.
- `preference`: accepted / rejected pairs for the same prompt, trained with DPO beside the
  supervised fine-tuning (`resolve_preferences`, illume_core/train/preference.py).
Inputs and outputs are plain rows; images are referenced by sample key, never copied.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence

import torch

from illume_core.model.images import from_png
from illume_core.self_enhance import assessment as sa
from illume_core.self_enhance.assessment import Assessment
from illume_core.self_enhance.options import SFT_STRATEGIES, check_strategies
from illume_core.train.data import SelfExample
from illume_core.train.preference import PreferencePair
from illume_core.world.geneval import Metadata

MAX_REPEATS = 4  # balanced_t2i: copies of one accepted image at most


def assessment_of(row: dict) -> Assessment | None:
    """An assessment row's verdicts as an Assessment; None when a dimension did not parse."""
    dims = {}
    for d in sa.DIMENSIONS:
        v = row.get(f"{d}_verdict")
        if v not in ("yes", "no"):
            return None
        dims[d] = sa.DimensionAssessment(verdict=v, reason=row.get(f"{d}_reason") or "")
    return Assessment(**dims)


def _example_id(strategy: str, *keys: str) -> str:
    return hashlib.sha256("|".join((strategy, *keys)).encode()).hexdigest()[:16]


def tag_repeats(accepted_per_tag: dict[str, int], cap: int = MAX_REPEATS) -> dict[str, int]:
    """Copies of each accepted image per tag so that every tag brings about as many as the largest.

    {"colors": 41, "counting": 9, "position": 4} -> {"colors": 1, "counting": 4, "position": 4}:
    round(41 / n) copies, at least 1 and at most `cap`.
    """
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    most = max(accepted_per_tag.values(), default=0)
    return {t: max(1, min(cap, round(most / n))) for t, n in accepted_per_tag.items() if n > 0}


def reformat_round(
    samples: Sequence[dict],
    assessments: Sequence[dict],
    metadata: dict[str, Metadata],
    strategies: Iterable[str],
    round: int,
) -> list[dict]:
    """sft_examples rows for a round.

    samples: {prompt_id, sample_index, sample_key, checkpoint_id}; assessments: the assessor's
    rows keyed by (prompt_id, sample_index); metadata: prompt id -> its GenEval line.
    Samples whose assessment did not parse are left out (and counted by the caller).
    """
    strategies = check_strategies(strategies)
    by_key = {(a["prompt_id"], a["sample_index"]): a for a in assessments}
    judged: list[tuple[dict, Assessment]] = []
    for s in sorted(samples, key=lambda r: (r["prompt_id"], r["sample_index"])):
        a = by_key.get((s["prompt_id"], s["sample_index"]))
        parsed = assessment_of(a) if a else None
        if parsed is not None:
            judged.append((s, parsed))
    accepted: dict[str, list[dict]] = defaultdict(list)
    rejected: dict[str, list[dict]] = defaultdict(list)
    for s, a in judged:
        (accepted if a.all_yes else rejected)[s["prompt_id"]].append(s)

    rows: list[dict] = []

    def add(strategy: str, s: dict, turns: list[dict], refs: list[str], copy: int = 0) -> None:
        ids = (*refs, str(copy)) if copy else refs  # a repeated example gets an id of its own
        rows.append(
            {
                "round": round,
                "checkpoint_id": s["checkpoint_id"],
                "prompt_id": s["prompt_id"],
                "sample_index": s["sample_index"],
                "example_id": _example_id(strategy, *ids),
                "conversation": json.dumps(turns),
                "image_refs": refs,
                "strategy": strategy,
                "source_sample": s["sample_key"],
            }
        )

    repeats: dict[str, int] = {}
    if "balanced_t2i" in strategies:
        per_tag: dict[str, int] = defaultdict(int)
        for s, a in judged:
            if a.all_yes:
                per_tag[metadata[s["prompt_id"]].tag] += 1
        repeats = tag_repeats(per_tag)
    for s, a in judged:
        meta = metadata[s["prompt_id"]]
        key = s["sample_key"]
        if "assessment" in strategies:
            turns = [
                {"role": "user", "content": f"<image:0> {sa.assessment_question(meta.prompt)}"},
                {"role": "assistant", "content": sa.format_assessment(a)},
            ]
            refs = [key]
            good = accepted[s["prompt_id"]]
            if not a.all_yes and good:
                fix = good[s["sample_index"] % len(good)]  # deterministic choice among accepted
                turns += [
                    {"role": "user", "content": sa.correction_turn(meta)},
                    {"role": "assistant", "content": "<image:1>"},
                ]
                refs.append(fix["sample_key"])
            add("assessment", s, turns, refs)
        draw = [{"role": "user", "content": meta.prompt}, {"role": "assistant", "content": "<image:0>"}]
        if "accepted_t2i" in strategies and a.all_yes:
            add("accepted_t2i", s, draw, [key])
        if "balanced_t2i" in strategies and a.all_yes:
            for copy in range(repeats[meta.tag]):
                add("balanced_t2i", s, draw, [key], copy)
    if "preference" in strategies:
        for pid in sorted(accepted):
            for good, bad in zip(accepted[pid], rejected.get(pid, []), strict=False):
                add(
                    "preference",
                    good,
                    [
                        {"role": "user", "content": metadata[pid].prompt},
                        {"role": "assistant", "content": "<image:0>", "rejected": "<image:1>"},
                    ],
                    [good["sample_key"], bad["sample_key"]],
                )
    return rows


def resolve_preferences(sft_rows: Iterable[dict], samples_by_key: dict[str, dict]) -> list[PreferencePair]:
    """Preference pairs (prompt, accepted codes, rejected codes) from the `preference` rows."""
    out = []
    for r in sft_rows:
        if r["strategy"] != "preference":
            continue
        user = json.loads(r["conversation"])[0]["content"]
        good, bad = (samples_by_key[k] for k in r["image_refs"])
        out.append(
            PreferencePair(
                user,
                torch.tensor(good["image_tokens"], dtype=torch.long),
                torch.tensor(bad["image_tokens"], dtype=torch.long),
            )
        )
    return out


def resolve(sft_rows: Iterable[dict], samples_by_key: dict[str, dict]) -> list[SelfExample]:
    """Training examples from sft rows, their images and codes looked up by sample key."""
    out = []
    for r in sft_rows:
        if r["strategy"] not in SFT_STRATEGIES:
            continue
        refs = [samples_by_key[k] for k in r["image_refs"]]
        out.append(
            SelfExample(
                conversation=json.loads(r["conversation"]),
                images=[from_png(s["png"]) for s in refs],
                codes=[torch.tensor(s["image_tokens"], dtype=torch.long) for s in refs],
            )
        )
    return out
