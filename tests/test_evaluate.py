"""Evaluation arithmetic: self-assessment confusion counts and balanced accuracy (a constant
answer scores 0.5), and editing judged against the target scene's composition."""

from __future__ import annotations

import json
import random

import pytest

from illume_core.eval.evaluations import (
    assessment_confusion,
    balanced_accuracy,
    confusion_rows,
    edit_correct,
    edit_items,
    edit_scores,
    extra_objects,
)
from illume_core.judge import Detection, judge_image
from illume_core.model.images import png_bytes
from illume_core.world.geneval import parse_line
from illume_core.world.prompts import scene_for
from illume_core.world.scenes import Obj, Scene, place_more, render


def _judgment(i: int, **truth) -> dict:
    dims = {"object": True, "count": True, "color": True, "spatial": True, **truth}
    return {"prompt_id": f"p{i}", "sample_index": 0, "details": json.dumps({"dimensions": dims})}


def _assessment(i: int, **verdicts) -> dict:
    v = {"object": "yes", "count": "yes", "color": "yes", "spatial": "yes", **verdicts}
    return {"prompt_id": f"p{i}", "sample_index": 0, **{f"{d}_verdict": x for d, x in v.items()}}


def test_a_constant_yes_scores_one_half_and_its_confusion_says_why():
    judgments = [_judgment(0), _judgment(1, count=False), _judgment(2, count=False), _judgment(3)]
    always_yes = [_assessment(i) for i in range(4)]
    conf = assessment_confusion(always_yes, judgments)
    assert conf["count"] == {"true_yes": 2, "false_yes": 2, "true_no": 0, "false_no": 0, "unparsed": 0}
    ba = balanced_accuracy(conf)
    assert ba["count"] == (0.5, 4)
    assert ba["object"] == (1.0, 4)  # every object truly right: only the yes-recall counts


def test_balanced_accuracy_rewards_catching_the_rare_wrong_image_and_counts_unparsed_as_misses():
    judgments = [_judgment(i, color=i != 0) for i in range(10)]  # one image of ten has a wrong colour
    right = [_assessment(i, color="no" if i == 0 else "yes") for i in range(10)]
    assert balanced_accuracy(assessment_confusion(right, judgments))["color"][0] == 1.0
    unparsed = [_assessment(i, color=None) for i in range(10)]
    conf = assessment_confusion(unparsed, judgments)
    assert conf["color"]["unparsed"] == 10
    assert balanced_accuracy(conf)["color"][0] == 0.0
    rows = confusion_rows(1, "ck", "eval", conf)
    assert {(r["tag"], r["metric"]) for r in rows} >= {("color", "unparsed"), ("count", "true_yes")}
    assert all(r["benchmark"] == "self_assessment" and r["n"] == 10 for r in rows)


def _det(shape: str, color: str, x: int, y: int, s: int) -> Detection:
    return Detection(shape, color, (x, y, x + s, y + s), s * s, 1.0)


def test_an_edit_is_right_only_with_the_target_objects_near_their_places():
    target = [{"shape": "circle", "color": "red", "x": 10, "y": 10, "s": 12}]
    assert edit_correct([_det("circle", "red", 12, 11, 12)], target, 64)
    assert not edit_correct([_det("circle", "blue", 10, 10, 12)], target, 64)  # wrong colour
    assert not edit_correct([_det("circle", "red", 30, 10, 12)], target, 64)  # not moved there
    assert not edit_correct(
        [_det("circle", "red", 10, 10, 12), _det("square", "red", 40, 40, 12)], target, 64
    )


def test_edit_scores_judge_drawn_images_against_their_targets():
    items = edit_items(6, seed=5)
    assert len({it["id"] for it in items}) == 6 and all(it["instruction"] for it in items)
    # a perfect editor draws each target; one that returns the source unchanged fails every edit
    perfect, unchanged = [], []
    for it in items:
        objs = tuple(Obj(**o) for o in json.loads(it["target"]))
        perfect.append({"id": it["id"], "png_out": png_bytes(render(Scene(64, objs)))})
        unchanged.append({"id": it["id"], "png_out": it["png"]})
    assert edit_scores(items, perfect)["overall"] == (1.0, 6)
    assert edit_scores(items, unchanged)["overall"][0] == pytest.approx(0.0)


def test_a_repeated_prompt_draws_new_images_instead_of_the_same_ones_again():
    """ShapesEval repeats prompts where a tag's space is small (single object: 5 in the seen split)."""
    from illume_core.eval.evaluations import sample_items, shapeseval_prompts

    metas = shapeseval_prompts(20)["eval"]
    single = [m for m in metas if m.tag == "single_object"]
    assert len(single) == 20 and len({m.prompt for m in single}) < 20  # the space is smaller than 20
    items = sample_items(metas, 4, round=0)
    keys = [(it["prompt_id"], it["sample_index"]) for it in items]
    assert len(items) == len(metas) * 4 and len(set(keys)) == len(keys)
    assert len({it["seed"] for it in items}) == len(items)
    # a prompt listed once keeps indices 0..K-1, as before
    once = [m for m in metas if sum(x.prompt == m.prompt for x in metas) == 1][0]
    assert sorted(it["sample_index"] for it in items if it["prompt"] == once.prompt) == [0, 1, 2, 3]


def test_extra_objects_counts_what_the_judge_found_beyond_the_prompt():
    meta = parse_line(
        json.dumps({"tag": "counting", "include": [{"class": "circle", "count": 2}], "prompt": "a photo of two circles"})
    )
    rng = random.Random(3)
    exact = scene_for(meta, rng, distractors=False)
    more = place_more(rng, exact, [("square", "red"), ("triangle", "blue")])
    named = sum(c.count for c in meta.include)
    assert extra_objects(named, judge_image(render(exact), meta).details) == 0
    assert extra_objects(named, judge_image(render(more), meta).details) == 2
    assert extra_objects(3, judge_image(render(exact), meta).details) == -1  # one missing
