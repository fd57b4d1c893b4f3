"""The round's decisions as pure functions: the prompt draw, the judge as assessor, the promotion gate."""

from __future__ import annotations

import pytest

from illume_core.eval.evaluations import prompt_id
from illume_core.model.images import png_bytes
from illume_core.self_enhance.assessment import parse_assessment
from illume_core.self_enhance.policy import draw_round_prompts, judge_assessment, novel_prompts, promotion
from illume_core.world.geneval import TAGS
from illume_core.world.prompts import Holdout, generate_prompts, scene_for, split_space
from illume_core.world.scenes import Obj, Scene, render


def test_the_round_draw_is_tag_balanced_seeded_and_without_repeats():
    prompts = generate_prompts(seed=3, per_tag=10)
    drawn = draw_round_prompts(prompts, 24, round=1, seed=0)
    assert drawn == draw_round_prompts(prompts, 24, round=1, seed=0)
    assert drawn != draw_round_prompts(prompts, 24, round=2, seed=0)  # another round, another draw
    assert len({prompt_id(m) for m in drawn}) == len(drawn) <= 24
    tags = sorted({m.tag for m in prompts})
    counts = {t: sum(m.tag == t for m in drawn) for t in tags}
    assert max(counts.values()) <= 24 // len(tags) and min(counts.values()) >= 1
    # a tag with one prompt is drawn once, however many turns it gets
    one = [m for m in prompts if m.tag != tags[0]] + [next(m for m in prompts if m.tag == tags[0])]
    assert sum(m.tag == tags[0] for m in draw_round_prompts(one, 24, 1, 0)) == 1
    with pytest.raises(ValueError, match="no prompts"):
        draw_round_prompts([], 4, 1, 0)


def test_novel_prompts_hold_only_held_out_compositions_and_never_an_evaluation_prompt():
    from illume_core.eval.evaluations import shapeseval_prompts

    holdout = Holdout.default()
    evaluation = [m for ms in shapeseval_prompts(20, holdout).values() for m in ms]
    novel = novel_prompts(holdout, evaluation)
    assert novel and all(holdout.is_heldout(m) for m in novel)
    assert not {prompt_id(m) for m in novel} & {prompt_id(m) for m in evaluation}
    # the default holdout's two-object and colour prompts are all ShapesEval's held-out prompts
    # (4 each), so what is left to draw is position and colour attribution
    assert {m.tag for m in novel} == {"position", "color_attr"}
    # every held-out prompt the evaluation does not use is there, once
    space = {prompt_id(m) for t in TAGS for m in split_space(t, holdout, "heldout")}
    assert {prompt_id(m) for m in novel} == space - {prompt_id(m) for m in evaluation}
    assert len(novel) == len({prompt_id(m) for m in novel})
    # the round's draw over them is tag-balanced like any other
    drawn = draw_round_prompts(novel, 20, round=1, seed=0)
    assert {m.tag for m in drawn} == {"position", "color_attr"}
    # a holdout with nothing beyond the evaluation's own prompts is a clear error
    only_pairs = Holdout(shape_pairs=frozenset({("circle", "triangle")}))
    tiny = novel_prompts(only_pairs, [])
    with pytest.raises(ValueError, match="no novel prompts"):
        novel_prompts(only_pairs, tiny)


def test_the_judge_as_assessor_writes_the_models_answer_format():
    import random

    meta = next(m for m in generate_prompts(seed=1, per_tag=4) if m.tag == "colors")
    right = png_bytes(render(scene_for(meta, random.Random(0), 64)))
    parsed = parse_assessment(judge_assessment(meta, right))
    assert parsed.status == "ok" and parsed.assessment.all_yes
    colour = meta.include[0].color
    other = "red" if colour != "red" else "blue"
    wrong = png_bytes(render(Scene(64, (Obj(meta.include[0].cls, other, 20, 20, 20),))))
    parsed = parse_assessment(judge_assessment(meta, wrong))
    assert parsed.status == "ok" and parsed.assessment.color.verdict == "no"
    assert parse_assessment(judge_assessment(meta, b"not a png")).status == "failed"


def test_promotion_keeps_a_candidate_within_the_margin_and_names_every_failure():
    assert promotion(0.40, 0.39, 0.9, 0.8, margin=0.02, min_parse_rate=0.5)[0] == "promoted"
    assert promotion(None, 0.10, 0.9, 0.8, margin=0.0, min_parse_rate=0.5)[0] == "promoted"  # unmeasured
    # the reason a user reads in the log rounds the scores (a mean of 240 images is not exact)
    reason = promotion(0.15833333333333335, 0.1708333333333333, 1.0, 1.0, margin=0.02, min_parse_rate=0.5)[1]
    assert reason.startswith("ShapesEval overall 0.158 -> 0.171 (margin 0.02)"), reason
    assert "not measured -> 0.100" in promotion(None, 0.1, 0.9, 0.8, margin=0.0, min_parse_rate=0.5)[1]
    status, reason = promotion(0.40, 0.30, 0.2, 0.8, margin=0.02, min_parse_rate=0.5)
    assert status == "rejected"
    assert "fell 0.400 -> 0.300" in reason and "parse rate 0.20 is below 0.5" in reason
    status, reason = promotion(0.40, 0.45, 0.2, 0.8, margin=0.02, min_parse_rate=0.5)
    assert status == "rejected" and "fell" not in reason
