"""The round's decisions, as pure functions: which prompts a round draws, what the judge says when
it stands in for the model as the assessor, and whether a candidate is promoted.

The tasks in tasks/steps.py read the lake, call these, and write the result; nothing here reads
or writes anything, so each decision has tests of its own (tests/test_policy.py).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from illume_core.eval.evaluations import prompt_id
from illume_core.self_enhance.assessment import format_assessment, from_evaluation
from illume_core.world.geneval import TAGS, Metadata
from illume_core.world.prompts import Holdout, split_space


def draw_round_prompts(prompts: Sequence[Metadata], n: int, round: int, seed: int) -> list[Metadata]:
    """A tag-balanced, seeded draw of `n` prompts (tags in turn, sorted by name), without repeats.

    A small tag's prompt may be drawn twice; it is kept once, so a round may hold fewer than `n`.
    The same (prompts, n, round, seed) always give the same list.
    """
    by_tag: dict[str, list[Metadata]] = {}
    for m in prompts:
        by_tag.setdefault(m.tag, []).append(m)
    if n > 0 and not by_tag:
        raise ValueError("no prompts to draw a round from")
    rng = random.Random(f"round-prompts/{round}/{seed}")
    tags = sorted(by_tag)
    chosen = [rng.choice(by_tag[tags[i % len(tags)]]) for i in range(n)]
    return list({prompt_id(m): m for m in chosen}.values())


def novel_prompts(holdout: Holdout, evaluation: Sequence[Metadata]) -> list[Metadata]:
    """The prompts of compositions the base corpus holds out (every tag, the prompt space's order),
    less every prompt in `evaluation` (ShapesEval's, both splits): a round on these draws what it
    has no ground truth for, and is scored on held-out prompts it never drew."""
    used = {prompt_id(m) for m in evaluation}
    out = [m for t in TAGS for m in split_space(t, holdout, "heldout") if prompt_id(m) not in used]
    if not out:
        raise ValueError(
            "no novel prompts: the holdout keeps no composition out of training beyond ShapesEval's "
            "own prompts; train with a wider --holdout or draw the round from the corpus"
        )
    return out


def judge_assessment(meta: Metadata, png: bytes) -> str:
    """The judge's verdicts on a sample (PNG bytes) for `meta`, written as the model writes its
    self-assessment (the judge-as-teacher arm). An image that cannot be read gives a text the
    parser rejects: a recorded failed assessment, not a failed round."""
    from illume_core.judge import detect
    from illume_core.model.images import from_png
    from illume_core.world.rules import apply_rules

    try:
        objects = detect(from_png(png)).objects
        return format_assessment(from_evaluation(meta, objects, apply_rules(meta, objects)))
    except ValueError as e:
        return f"image could not be read: {e}"


def promotion(
    before: float | None,
    after: float | None,
    parse_rate: float,
    round_parse_rate: float,
    margin: float,
    min_parse_rate: float,
) -> tuple[str, str]:
    """('promoted' or 'rejected', the reason) for a candidate scoring `after` against the base's
    `before` (ShapesEval overall; None when not measured, which does not block), with its own
    assessment parse rate `parse_rate` (the round's `round_parse_rate` is reported beside it).

    Promoted unless ShapesEval fell by more than `margin` or the parse rate is below
    `min_parse_rate`; a rejection names every failed condition.
    """
    ok_score = before is None or after is None or after >= before - margin
    ok_parse = parse_rate >= min_parse_rate
    if ok_score and ok_parse:

        def fmt(x: float | None) -> str:
            return "not measured" if x is None else f"{x:.3f}"

        return "promoted", (
            f"ShapesEval overall {fmt(before)} -> {fmt(after)} (margin {margin}); "
            f"candidate parse rate {parse_rate:.2f}"
            f" (round's assessments {round_parse_rate:.2f})"
        )
    why = []
    if not ok_score:
        why.append(f"ShapesEval overall fell {before:.3f} -> {after:.3f}, more than the margin {margin}")
    if not ok_parse:
        why.append(f"the candidate's assessment parse rate {parse_rate:.2f} is below {min_parse_rate}")
    return "rejected", "; ".join(why)
