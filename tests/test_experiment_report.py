"""The experiment's report: ShapesEval from per-prompt judgments, paired bootstrap intervals, merged seeds."""

from __future__ import annotations

import importlib.util
import json
import random
import re
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location(
    "self_enhancement", Path(__file__).parents[1] / "benchmarks" / "self_enhancement.py"
)
exp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(exp)


def _prompts(rng: random.Random, p_correct: dict[str, float], per_tag: int = 20, images: int = 4) -> dict:
    return {
        f"{tag}-{i}": [tag, sum(rng.random() < p for _ in range(images)), images]
        for tag, p in p_correct.items()
        for i in range(per_tag)
    }


def _seed(seed: int, lift: float) -> dict:
    rng = random.Random(seed)
    base = {t: 0.2 + 0.1 * i for i, t in enumerate(exp.TAGS)}
    arms = {}
    for arm, d in (("baseline", 0.0), ("control", 0.0), ("round", lift)):
        prompts = {
            "eval": _prompts(rng, {t: min(1.0, p + d) for t, p in base.items()}),
            "heldout": _prompts(rng, {t: min(1.0, p + d) for t, p in base.items() if t != "counting"}),
        }
        m = {
            "overall": exp.shapeseval(prompts["eval"]),
            "heldout_overall": exp.shapeseval(prompts["heldout"]),
        }
        m.update(
            {t: exp.shapeseval({k: v for k, v in prompts["eval"].items() if v[0] == t}) for t in exp.TAGS}
        )
        arms[arm] = {"metrics": m, "prompts": prompts, "minutes": 1.0}
    return {"seed": seed, "budget": "experiment", "vision_from": None, "base_minutes": 20.0, "arms": arms}


def test_shapeseval_is_the_mean_over_tags_of_images_judged_correct():
    prompts = {"a": ["colors", 4, 4], "b": ["colors", 0, 4], "c": ["position", 1, 4]}
    assert exp.shapeseval(prompts) == pytest.approx((0.5 + 0.25) / 2)
    assert exp.shapeseval(prompts, ["a", "a", "c"]) == pytest.approx((1.0 + 0.25) / 2)


def test_bootstrap_intervals_hold_the_estimate_and_separate_a_real_lift_from_none():
    seeds = [_seed(0, 0.25), _seed(1, 0.25)]
    cis, diffs = exp.bootstrap(seeds, ["baseline", "control", "round"], draws=400)
    for arm, (lo, hi) in cis.items():
        est = sum(s["arms"][arm]["metrics"]["overall"] for s in seeds) / 2
        assert lo <= est <= hi and hi - lo < 0.2
    assert diffs["round"][0] > 0.1  # a lift of 0.25 per image is clearly above zero
    assert diffs["baseline"][0] < 0 < diffs["baseline"][1]  # two arms drawn alike: zero inside


def test_the_report_merges_every_seed_file_with_intervals(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    for s in (_seed(0, 0.1), _seed(3, 0.1)):
        (results / f"seed{s['seed']}.json").write_text(json.dumps(s))
    out = tmp_path / "RESULTS.md"
    out.write_text("old table\n## Reading\nkept by hand\n")
    exp.write_report(results, out, "cmd")
    text = out.read_text()
    assert "Seeds: [0, 3]" in text and "| round |" in text and "[95% CI]" in text
    assert text.rstrip().endswith("kept by hand") and "old table" not in text
    assert (tmp_path / "RESULTS.png").stat().st_size > 1000


def test_an_arm_run_on_some_seeds_is_reported_over_those_seeds(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    s0, s1 = _seed(0, 0.1), _seed(1, 0.3)
    del s1["arms"]["round"]  # seed 1 ran baseline and control only
    for s in (s0, s1):
        (results / f"seed{s['seed']}.json").write_text(json.dumps(s))
    out = tmp_path / "RESULTS.md"
    exp.write_report(results, out, "cmd")
    rows = {line.split(" | ")[0]: line for line in out.read_text().splitlines() if line.startswith("| ")}
    # every arm is reported, with the number of seeds its figures are the mean of
    assert rows["| round"].startswith("| round | 1 | ") and rows["| control"].startswith("| control | 2 | ")
    # round minus control pairs the seeds that ran both: seed 0 only
    d = s0["arms"]["round"]["metrics"]["overall"] - s0["arms"]["control"]["metrics"]["overall"]
    assert f"| round | 1 | {d:+.3f} [" in out.read_text()
    # a seed that did not run an arm shows a dash in the per-seed table
    assert any(
        line.startswith("| 1 | ") and line.rstrip().endswith("| - |") for line in out.read_text().splitlines()
    )


def test_a_partial_run_adds_its_arms_and_rounds_to_the_seed_and_refuses_another_base():
    old = _seed(0, 0.1)
    new = {
        **_seed(0, 0.1),
        "arms": {"baseline": old["arms"]["baseline"], "judge_round": old["arms"]["round"]},
    }
    new["rounds"] = [{"round": 0}, {"round": 1, "status": "promoted"}]
    merged = exp.merge_seed(old, new)
    assert set(merged["arms"]) == {"baseline", "control", "round", "judge_round"}
    assert merged["rounds"] == new["rounds"] and "rounds" not in old
    other = _seed(5, 0.0)  # another base model: its baseline evaluation differs
    with pytest.raises(SystemExit, match="not the one of the saved result"):
        exp.merge_seed(old, {**other, "seed": 0})
    # drawn at another sampling setting (a saved result without the field drew at top-p 1)
    cut = {**new, "image_sampling": {"cfg_scale": 2.0, "temperature": 1.0, "top_k": None, "top_p": 0.7}}
    with pytest.raises(SystemExit, match="drew its images with"):
        exp.merge_seed(old, cut)
    assert exp.merge_seed({**old, "image_sampling": cut["image_sampling"]}, cut)["arms"]
    # fine-tuned at another lr: the arms would not compare
    with pytest.raises(SystemExit, match="lr scale 1.0, this run at 0.25"):
        exp.merge_seed(old, {**new, "finetune_lr_scale": 0.25})


def test_a_seeds_arms_become_a_lake_table_that_the_report_shows(tmp_path):
    from flows.report import build_report
    from storage.catalog import query
    from storage.lake import Lake

    res = {**_seed(3, 0.3), "finetune_lr_scale": 0.25}
    lake = Lake(str(tmp_path / "lake"))
    exp.record_arms(tmp_path / "lake", res)
    rows = query(lake, "SELECT * FROM experiment_arms ORDER BY arm, metric").to_pylist()
    fig = {(r["arm"], r["metric"]): r for r in rows}
    assert {r["seed"] for r in rows} == {3} and {r["finetune_lr_scale"] for r in rows} == {0.25}
    # every figure of every arm, as the seed file has it
    for arm, a in res["arms"].items():
        for metric, value in a["metrics"].items():
            assert fig[(arm, metric)]["value"] == pytest.approx(value)
    # overall and overall minus control carry their paired intervals, which hold the estimate
    diff = fig[("round", "overall_minus_control")]
    want = res["arms"]["round"]["metrics"]["overall"] - res["arms"]["control"]["metrics"]["overall"]
    assert diff["value"] == pytest.approx(want) and diff["ci_low"] <= want <= diff["ci_high"]
    assert diff["ci_low"] > 0  # a 0.3 lift on every tag is not noise
    assert ("control", "overall_minus_control") not in fig and ("baseline", "overall_minus_control") in fig
    ov = fig[("round", "overall")]
    assert ov["ci_low"] <= ov["value"] <= ov["ci_high"] and fig[("round", "counting")]["ci_low"] is None
    # writing the seed again replaces its partition instead of adding rows
    exp.record_arms(tmp_path / "lake", res)
    assert query(lake, "SELECT count(*) AS n FROM experiment_arms").to_pylist()[0]["n"] == len(rows)

    html = build_report(str(tmp_path / "lake")).read_text()
    section = html.split("<h2 id='arms'>")[1].split("</table>")[0]
    assert "Seed 3 (fine-tuning lr x0.25)" in section
    body = section.split("<tr>")[2:]
    assert [re.match(r"<td>(\w+)</td>", r).group(1) for r in body] == ["baseline", "control", "round"]
    assert f"{diff['value']:+.3f} <small>[{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}]</small>" in body[2]
