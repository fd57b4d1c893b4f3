"""Sampling settings in their short form, and choosing a base model's setting on tuning prompts
(illume_core/eval/calibration.py, which benchmarks/sampling_sweep.py shares)."""

from __future__ import annotations

import pytest

from illume_core.eval import calibration
from illume_core.model.sampling import IMAGE_SAMPLING, SAMPLING_CANDIDATES, parse_setting
from illume_core.model.sampling import SamplingParams as P


def test_settings_parse_as_documented():
    parse = parse_setting
    assert parse("2:1:0") == P(cfg_scale=2.0, temperature=1.0, top_k=None, top_p=1.0)  # top_k 0: no cut
    assert parse("4:0.7:20") == P(cfg_scale=4.0, temperature=0.7, top_k=20)
    assert parse("2:0:0") == P(cfg_scale=2.0, temperature=0.0)  # temperature 0: greedy
    assert parse("3:1:0:0.8") == P(cfg_scale=3.0, top_p=0.8)
    assert parse("2:1:0:0.7:m") == P(cfg_scale=2.0, top_p=0.7, nucleus="mask")


@pytest.mark.parametrize(
    "bad", ["2:1", "2:1:0:5", "2:1:0:0", "2:1:0:0.8:1", "2:1:0:0.8:x", "2:-1:0", "x:1:0", "2:1:-3"]
)
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError, match=r"setting '.*': (expected|cfg)"):
        parse_setting(bad)


def test_a_setting_reads_back_from_its_short_form():
    for p in [*SAMPLING_CANDIDATES, P(cfg_scale=3.0, temperature=0.7, top_k=20), P(cfg_scale=None)]:
        back = parse_setting(p.setting)
        assert back.model_dump() == {**p.model_dump(), "cfg_scale": p.cfg_scale or 1.0}
    assert IMAGE_SAMPLING.setting == "2:1:0:0.7"
    assert P(top_p=0.9, nucleus="mask").setting == "2:1:0:0.9:m"
    assert P().setting == "2:1:0"


def test_candidates_start_with_the_default_and_differ():
    assert SAMPLING_CANDIDATES[0] == IMAGE_SAMPLING
    assert len({p.setting for p in SAMPLING_CANDIDATES}) == len(SAMPLING_CANDIDATES)


def test_tuning_prompts_are_not_shapeseval_prompts():
    from illume_core.eval.evaluations import SHAPESEVAL_SEED, prompt_id, shapeseval_prompts

    assert calibration.TUNING_SEED != SHAPESEVAL_SEED
    items, metas = calibration.tuning_set(per_tag=3, images_per_prompt=2)
    # a draw of its own (ShapesWorld's prompt space is small, so single prompts may coincide)
    assert list(metas) != [prompt_id(m) for m in shapeseval_prompts(3)["eval"]]
    assert {m.tag for m in metas.values()} == {
        "single_object",
        "two_object",
        "counting",
        "colors",
        "position",
        "color_attr",
    }
    # every request is a distinct image of a known prompt, drawn from a fixed seed
    assert len({(it["prompt_id"], it["sample_index"]) for it in items}) == len(items) == 6 * 3 * 2
    assert all(it["prompt_id"] in metas for it in items)
    assert items == calibration.tuning_set(per_tag=3, images_per_prompt=2)[0]
    # never a ShapesEval image: where a tuning prompt is also a ShapesEval prompt (the prompt space
    # is small), its images are drawn from other seeds than the base model's evaluation drawings
    from illume_core.eval.evaluations import sample_items

    evaluated = {
        (it["prompt_id"], it["sample_index"], it["seed"])
        for split in shapeseval_prompts(20).values()
        for it in sample_items(split, 4, 0)
    }
    shared = [it for it in items if it["prompt_id"] in {p for p, _, _ in evaluated}]
    assert shared  # the case this guards: the same prompt in both sets
    assert not {(it["prompt_id"], it["sample_index"], it["seed"]) for it in items} & evaluated
    assert not {it["seed"] for it in items} & {seed for _, _, seed in evaluated}


def test_choose_takes_the_best_and_keeps_the_earlier_on_a_tie():
    a, b, c = SAMPLING_CANDIDATES[:3]
    assert calibration.choose([(a, 0.2), (b, 0.5), (c, 0.4)]) == b
    assert calibration.choose([(a, 0.5), (b, 0.5), (c, 0.4)]) == a  # the default wins a tie
    assert calibration.choose([(a, 0.0), (b, 0.0)]) == a
    with pytest.raises(ValueError, match="no sampling settings"):
        calibration.choose([])


def test_setting_scores_judge_rendered_truth_and_blank_images():
    """The score of a setting is the judge's: a correct render scores 1, a blank canvas 0."""
    import random

    from PIL import Image

    from illume_core.model.images import png_bytes
    from illume_core.world.prompts import scene_for
    from illume_core.world.scenes import BACKGROUND, render

    items, metas = calibration.tuning_set(per_tag=1, images_per_prompt=1)
    rng = random.Random(1)
    good = [
        {**it, "png": png_bytes(render(scene_for(metas[it["prompt_id"]], rng, distractors=False)))}
        for it in items
    ]
    blank = [{**it, "png": png_bytes(Image.new("RGB", (64, 64), BACKGROUND))} for it in items]
    assert calibration.setting_scores(good, metas)["overall"][0] == 1.0
    assert calibration.setting_scores(blank, metas)["overall"][0] == 0.0
