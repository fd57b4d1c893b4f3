"""The pipeline through Prefect and Ray, on the smoke budget: a round, a rerun, a crash, a busy lake.

One base model is trained once for the module; each test works on its own copy of that lake.
"""

from __future__ import annotations

import shutil

import pytest

from storage.lock import LakeBusyError
from tests.conftest import SMOKE_ROUND, flow_task_runs

ROUND = SMOKE_ROUND  # the flow's keyword arguments: the knobs (`config`), workers, lock_timeout_s
KNOBS = ROUND["config"]  # a RoundConfig


@pytest.fixture(scope="module")
def base_lake(smoke_lake):
    return smoke_lake  # trained once per session (tests/conftest.py), shared with the fault matrix tests


def _copy(base, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(base, dst)
    return dst


def _counts(lake: str) -> dict[str, int]:
    from storage.registry import get_lake
    from storage.schemas import TABLES

    lk = get_lake(lake)
    return {t: lk.read(t).num_rows for t in TABLES if t != "task_runs"}  # task runs: one per attempt


def _task_runs(lake: str) -> dict[str, object]:
    from storage.registry import get_lake

    return {
        r["task"] + "/" + str(r["round"]): r["ended_at"] for r in get_lake(lake).read("task_runs").to_pylist()
    }


@pytest.fixture(scope="module")
def round_lake(smoke_round_lake):
    return smoke_round_lake  # a round with ROUND's parameters, shared with tests/test_fault_matrix.py


def test_base_pipeline_wrote_every_table(base_lake):
    from storage.catalog import query
    from storage.registry import get_lake

    lk = get_lake(str(base_lake))
    rounds = lk.read("rounds").to_pylist()
    assert [(r["round"], r["status"]) for r in rounds] == [(0, "promoted")]
    stages = sorted(r["stage"] for r in lk.read("checkpoints").to_pylist())
    assert stages == ["stage0", "stage1", "stage2", "stage3", "vision"]
    benches = {r["benchmark"] for r in lk.read("evaluations").to_pylist()}
    assert benches == {"shapeseval", "self_assessment", "self_assessment_likelihood", "vqa", "editing"}
    scores = query(lk, "SELECT tag FROM round_scores WHERE split = 'eval'").column("tag").to_pylist()
    assert "overall" in scores


def test_base_pipeline_chose_its_sampling_on_tuning_prompts(base_lake):
    """Every candidate setting was scored per tag on the tuning prompts, the best overall was
    chosen (the default on a tie), and the lake's drawings use the one chosen."""
    from illume_core.model.sampling import SAMPLING_CANDIDATES, SamplingParams
    from storage.registry import get_lake
    from tasks.plumbing import lake_sampling

    trials = get_lake(str(base_lake)).read("sampling_trials").to_pylist()
    overall = {r["setting"]: r["accuracy"] for r in trials if r["tag"] == "overall"}
    assert sorted(overall) == sorted(p.setting for p in SAMPLING_CANDIDATES)
    assert all(r["n"] == 1 for r in trials if r["tag"] != "overall")  # smoke: 1 prompt x 1 image
    chosen = {r["setting"] for r in trials if r["chosen"]}
    assert len(chosen) == 1
    best = max(overall.values())
    tied = [p.setting for p in SAMPLING_CANDIDATES if overall[p.setting] == best]
    assert chosen == {tied[0]}  # the best; among equals, the earlier candidate (the default first)
    assert lake_sampling(str(base_lake)).setting in chosen
    assert SamplingParams.model_validate_json(
        next(r["params"] for r in trials if r["chosen"])
    ) == lake_sampling(str(base_lake))


def test_illume_calibrate_chooses_a_lakes_setting_again(base_lake, tmp_path):
    """A lake without a chosen setting (trained before the task existed) draws with the default;
    `illume calibrate` (the choose-sampling flow) chooses one for its current checkpoint, as the
    train pipeline did (here a cache hit: the same checkpoint, candidates and budget)."""
    from flows.pipeline import choose_sampling
    from illume_core.model.sampling import IMAGE_SAMPLING, SamplingParams
    from storage.registry import SAMPLING_FILE
    from tasks.plumbing import lake_sampling

    lake = _copy(base_lake, tmp_path, "older")
    (lake / SAMPLING_FILE).unlink()
    assert lake_sampling(str(lake)) == IMAGE_SAMPLING
    out = choose_sampling(lake=str(lake))
    assert (lake / SAMPLING_FILE).is_file()  # chosen and stored again
    assert SamplingParams.model_validate_json(out["sampling"]) == lake_sampling(str(base_lake))
    assert lake_sampling(str(lake)) == lake_sampling(str(base_lake))


def test_round_through_prefect_and_ray(round_lake):
    from storage.registry import get_lake

    lake, out = round_lake
    lk = get_lake(str(lake))
    prompts = lk.read("prompts", 1, "self").num_rows
    samples = lk.read("samples", 1, "self")
    assert samples.num_rows == prompts * KNOBS.images_per_prompt > 0
    assert lk.read("assessments", 1, "self-self").num_rows == samples.num_rows
    assert lk.read("judgments", 1, "self").num_rows == samples.num_rows
    r1 = lk.read("rounds", 1).to_pylist()[0]
    assert r1["status"] == out["status"] in ("promoted", "rejected") and r1["reason"]
    assert r1["ended_at"] is not None and r1["candidate_checkpoint"]
    # every sample row carries its lineage
    row = samples.to_pylist()[0]
    assert row["sample_key"] == f"r1/{row['checkpoint_id']}/{row['prompt_id']}/{row['sample_index']}"


def test_rerun_assess_keeps_sample_cached(round_lake, prefect_harness):

    from flows.pipeline import self_enhancement_round

    lake, _ = round_lake
    before_counts, before_runs = _counts(str(lake)), _task_runs(str(lake))
    state = self_enhancement_round(lake=str(lake), round=1, rerun=["assess"], return_state=True, **ROUND)
    assert state.is_completed()
    runs = flow_task_runs(state.state_details.flow_run_id)
    states = {r.name.rsplit("-", 1)[0]: r.state.name for r in runs}  # "sample-6a0" -> "sample"
    assert states["sample"] == "Cached" and states["assess"] == "Completed", states
    # the evaluation sub-flow's tasks ran as tasks; its drawings and assessments were cache hits
    assert states["eval-sample"] == states["eval-assess"] == "Cached", states
    after_runs = _task_runs(str(lake))
    assert after_runs["sample/1"] == before_runs["sample/1"]  # the sample task body did not run
    assert after_runs["assess/1"] != before_runs["assess/1"]  # assess did
    assert _counts(str(lake)) == before_counts


def test_a_copied_lake_keeps_its_caches_and_reruns_only_assess(round_lake, prefect_harness, tmp_path):
    """Cache keys name the lake's contents, not its path: on a copy, a rerun of assess reruns assess alone."""

    from flows.pipeline import self_enhancement_round

    original, first = round_lake
    lake = _copy(original, tmp_path / "restored" / "elsewhere", "lake")
    before_runs, original_runs = _task_runs(str(lake)), _task_runs(str(original))
    state = self_enhancement_round(lake=str(lake), round=1, rerun=["assess"], return_state=True, **ROUND)
    assert state.is_completed()
    out = state.result()
    runs = flow_task_runs(state.state_details.flow_run_id)
    states = sorted((r.name.rsplit("-", 1)[0], r.state.name) for r in runs)
    assert ("assess", "Completed") in states and ("sample", "Cached") in states, states
    # what does not depend on assess's output is a cache hit; what does follows only if it changed
    follows = (
        {"reformat", "train-self_enhance", "eval-sample", "eval-judge", "eval-assess", "understand"}
        | {"evaluate", "promote"}
        if out["assessments"] != first["assessments"]
        else set()
    )
    others = [(n, st) for n, st in states if n != "assess" and not (n in follows and st == "Completed")]
    assert others and all(st == "Cached" for _, st in others), states
    assert {n for n, _ in states} >= {
        "select-prompts",
        "sample",
        "judge",
        "eval-sample",
        "evaluate",
        "promote",
    }
    after_runs = _task_runs(str(lake))
    assert (
        after_runs["sample/1"] == before_runs["sample/1"]
        and after_runs["assess/1"] != before_runs["assess/1"]
    )
    assert _task_runs(str(original)) == original_runs  # the original lake was not touched
    assert out["current"].startswith(str(lake.resolve()))  # the copy's own checkpoint
    assert out["candidate"].startswith(str(lake.resolve()))


def test_cache_keys_follow_what_the_budget_and_recipes_stand_for(monkeypatch):
    """A budget or recipe changed under the same name gives training tasks a new key (no stale model)."""
    from illume_core import settings
    from illume_core.settings import PipelineSettings
    from illume_core.train import recipes
    from tasks.steps import CACHE_POLICY

    s = PipelineSettings(budget="smoke")

    def key():
        return CACHE_POLICY.policies[0].compute_key(
            None, {"lake": "/l", "settings": s, "stage": "stage2"}, {}
        )

    before = key()
    assert key() == before
    smoke = settings.BUDGETS["smoke"]
    monkeypatch.setitem(
        settings.BUDGETS,
        "smoke",
        smoke.model_copy(update={"stage_steps": {**smoke.stage_steps, "stage2": 3}}),
    )
    after_budget = key()
    assert after_budget != before
    s2 = recipes.RECIPES["stage2"]
    monkeypatch.setitem(recipes.RECIPES, "stage2", s2.model_copy(update={"mix": {"t2i": 1.0}}))
    assert key() not in (before, after_budget)


def test_drawing_tasks_key_on_the_sampling_setting(monkeypatch, tmp_path, prefect_harness):
    """A changed image-sampling setting gives the drawing tasks new keys (no stale drawings or
    scores), and leaves the other tasks' keys alone."""
    from illume_core.model import sampling
    from tasks.steps import CACHE_POLICY, DRAWING_CACHE_POLICY

    inputs = {"lake": "/l", "round": 0, "checkpoint": "/l/checkpoints/abc"}

    def keys():  # the input and sampling parts (the task-source part needs a running task)
        inputs_part, _, sampling_part = DRAWING_CACHE_POLICY.policies
        drawing = (inputs_part.compute_key(None, inputs, {}), sampling_part.compute_key(None, inputs, {}))
        return drawing, CACHE_POLICY.policies[0].compute_key(None, inputs, {})

    drawing, other = keys()
    monkeypatch.setattr(sampling, "IMAGE_SAMPLING", sampling.SamplingParams(top_p=0.5))
    drawing_after, other_after = keys()
    assert drawing_after != drawing and other_after == other
    # a lake whose base model chose its own setting keys on that one, not on the default
    from storage.registry import save_sampling
    from tasks.plumbing import lake_sampling

    inputs["lake"] = str(tmp_path)
    default, other_default = keys()
    save_sampling(str(tmp_path), sampling.SamplingParams(top_p=0.9, nucleus="mask").model_dump_json())
    chosen, other_chosen = keys()
    assert chosen != default and other_chosen == other_default
    assert lake_sampling(str(tmp_path)) == sampling.SamplingParams(top_p=0.9, nucleus="mask")
    # the flows' per-run options keep the sampling part for the drawing tasks only
    from flows.pipeline import _opts
    from tasks.plumbing import ImageSampling

    def has_sampling(name):
        return any(
            isinstance(p, ImageSampling) for p in _opts(str(tmp_path), [], name)["cache_policy"].policies
        )

    assert has_sampling("sample") and has_sampling("eval-sample")
    assert not has_sampling("judge") and not has_sampling("evaluate")  # scores what eval-sample drew
    assert not has_sampling("understand")  # its edits draw with EDIT_SAMPLING, whatever the lake's


def test_the_lakes_setting_reaches_the_workers(base_lake, tmp_path):
    """The sample task draws with the lake's chosen setting: the same prompts and seeds drawn
    under another stored setting give other images."""
    from illume_core.model.sampling import SamplingParams
    from storage.registry import current_checkpoint, get_lake, save_sampling
    from tasks import steps

    digests = []
    for name, setting in (("as-chosen", None), ("greedy", SamplingParams(temperature=0.0))):
        lake = str(_copy(base_lake, tmp_path, name))
        if setting is not None:
            save_sampling(lake, setting.model_dump_json())
        prompts = steps.select_prompts.fn(lake, 1, 2, 0)
        steps.sample.fn(lake, 1, current_checkpoint(lake), prompts, 2, "self", ROUND["workers"])
        digests.append(get_lake(lake).digest("samples", 1, "self"))
    assert digests[0] != digests[1]


def test_cache_keys_leave_out_the_lake_path():
    """The key of the same task inputs in two lakes (checkpoint paths inside each) is one key."""
    from storage.registry import lake_path, lake_ref
    from tasks.steps import CACHE_POLICY

    policy = CACHE_POLICY - "workers"

    def key(lake, workers=2):
        inputs = {"lake": lake, "round": 1, "checkpoint": f"{lake}/checkpoints/abc123", "workers": workers}
        return policy.policies[0].compute_key(None, inputs, {})

    assert key("/data/lake") == key("/mnt/restored/lake") == key("/mnt/restored/lake", workers=8)
    assert key("/data/lake") != (CACHE_POLICY.policies[0].compute_key(None, {"lake": "/x", "round": 2}, {}))
    assert lake_ref("/data/lake", "/data/lake/checkpoints/abc") == "checkpoints/abc"
    assert lake_ref("/data/lake", "/elsewhere/abc") == "/elsewhere/abc"  # outside the lake: as it is
    assert lake_path("/data/lake", "checkpoints/abc") == "/data/lake/checkpoints/abc"


def test_actor_killed_mid_sampling_gives_identical_rows(base_lake, round_lake, tmp_path, monkeypatch):
    """A model worker SIGKILLed in the middle of the sample task: its shard is redone and the
    task writes the very rows of the undisturbed round (the steps after it read only those rows;
    a whole faulted round against an undisturbed one is tests/test_fault_matrix.py's)."""
    from storage.registry import current_checkpoint, get_lake
    from tasks import steps
    from tasks.pool import shutdown_pools

    marker = tmp_path / "crashed"
    lake = str(_copy(base_lake, tmp_path, "lake"))
    prompts = steps.select_prompts.fn(lake, 1, KNOBS.n_prompts, 0)  # the round's own draw (seed 0)
    shutdown_pools()
    monkeypatch.setenv("ILLUME_FAULT_CRASH", f"sample:{marker}")
    try:
        steps.sample.fn(
            lake, 1, current_checkpoint(lake), prompts, KNOBS.images_per_prompt, "self", ROUND["workers"]
        )
    finally:
        monkeypatch.delenv("ILLUME_FAULT_CRASH")
        shutdown_pools()
    assert marker.exists()  # a worker really died in the middle of sampling
    clean, crashed = get_lake(str(round_lake[0])), get_lake(lake)
    assert crashed.digest("prompts", 1, "self") == clean.digest("prompts", 1, "self")
    assert crashed.digest("samples", 1, "self") == clean.digest("samples", 1, "self")


def test_second_round_on_a_busy_lake_is_refused(base_lake, tmp_path):
    from flows.pipeline import self_enhancement_round
    from storage.lake import Lake

    lake = _copy(base_lake, tmp_path, "lake")
    other = Lake(lake)  # another writer (its own lock handle) holds the lake
    with other.writer(owner="someone-else"):
        with pytest.raises(LakeBusyError, match="someone-else.*another round is running"):
            self_enhancement_round(lake=str(lake), **ROUND)


def test_data_parallel_stage_on_two_cpu_workers(base_lake, tmp_path, monkeypatch):
    """The Ray Train path (TorchTrainer + DDP over gloo on CPU) trains and writes one checkpoint."""
    from illume_core.model.checkpoint import read_manifest
    from storage.registry import current_checkpoint
    from tasks.plumbing import load_settings
    from tasks.trainer import train_on_actor

    monkeypatch.setenv("ILLUME_TRAIN_WORKERS", "2")
    s = load_settings(str(base_lake))
    parent = current_checkpoint(str(base_lake))
    res = train_on_actor(s, "stage3", parent, str(tmp_path), steps=2)  # tmp_path as the lake root
    assert len(res.losses) == 2 and all(x == x for x in res.losses)
    manifest = read_manifest(res.path)
    assert manifest["id"] == res.checkpoint_id and manifest["parent"] == read_manifest(parent)["id"]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if not p.name.startswith("_")] == [
        res.checkpoint_id
    ]


def test_a_likelihood_preference_round_runs_through_prefect_with_its_margins_and_pairs(base_lake, tmp_path):
    """One round through Prefect and Ray with `--assessor likelihood --likelihood-margins ...` and
    the strategies `accepted_t2i` and `preference`:

    - the margins reach the Ray workers' assessor and are recorded with the round. Margins no
      counterfactual can beat make every verdict "yes", so every sample is accepted and becomes a
      text-to-image example;
    - the round pairs each prompt's accepted and rejected samples (by its own assessments), writes
      them as sft_examples and fine-tunes on exactly those pairs. With every sample accepted that
      is zero pairs here; the DPO loss on real pairs is tested in tests/test_preference.py, and
      the pairing rule in tests/test_self_enhance.py."""
    import json

    from flows.pipeline import self_enhancement_round
    from illume_core.model.checkpoint import read_manifest
    from illume_core.self_enhance.reformat import assessment_of
    from illume_core.settings import RoundConfig
    from storage.registry import get_lake

    lake = _copy(base_lake, tmp_path, "likelihood")
    lenient = dict.fromkeys(("object", "count", "color", "spatial"), 1e6)
    config = RoundConfig(
        n_prompts=KNOBS.n_prompts,
        images_per_prompt=KNOBS.images_per_prompt,
        assessor="likelihood",
        likelihood_margins=lenient,
        strategies=["accepted_t2i", "preference"],
    )
    out = self_enhancement_round(lake=str(lake), **{**ROUND, "config": config})
    lk = get_lake(str(lake))
    rows = lk.read("assessments", 1, "self-likelihood").to_pylist()
    assert len(rows) == KNOBS.n_prompts * KNOBS.images_per_prompt
    assert all(r[f"{d}_verdict"] == "yes" for r in rows for d in lenient) and {
        r["assessor"] for r in rows
    } == {"likelihood"}
    params = lk.read("rounds", 1).to_pylist()[0]["params"]
    assert json.loads(params)["likelihood_margins"] == lenient
    assert RoundConfig.from_params(params).likelihood_margins == lenient  # `illume rerun` repeats them

    verdicts: dict[str, list[bool]] = {}
    for a in rows:
        parsed = assessment_of(a)
        if parsed is not None:
            verdicts.setdefault(a["prompt_id"], []).append(parsed.all_yes)
    expected = sum(min(sum(v), len(v) - sum(v)) for v in verdicts.values())
    sft = lk.read("sft_examples", 1).to_pylist()
    assert sum(r["strategy"] == "accepted_t2i" for r in sft) == len(rows)  # every image accepted
    pairs = [r for r in sft if r["strategy"] == "preference"]
    assert len(pairs) == expected and {r["strategy"] for r in sft} <= {"accepted_t2i", "preference"}
    for r in pairs:  # an accepted sample first, a rejected one of the same prompt second
        good, bad = r["image_refs"]
        assert good.split("/")[2] == bad.split("/")[2] == r["prompt_id"]
    run = lk.read("rounds", 1).to_pylist()[0]
    assert run["status"] == out["status"]
    extra = read_manifest(lake / "checkpoints" / run["candidate_checkpoint"])["extra"]
    assert extra["preference_pairs"] == expected


def test_novel_round_prompts_are_held_out_compositions_in_the_prompts_table(base_lake, tmp_path):
    from illume_core.train.data import BaseCorpus
    from illume_core.world.geneval import parse_line
    from storage.registry import get_lake
    from tasks import steps

    lake = str(_copy(base_lake, tmp_path, "lake"))
    s = steps.load_settings(lake)
    holdout = BaseCorpus(s.cfg, s.corpus).holdout
    for source, split, held in (("corpus", "train", False), ("novel", "heldout", True)):
        rows = steps.read_ref(lake, steps.select_prompts.fn(lake, 9, 6, 0, source))
        # (the smoke corpus's novel space can be smaller than a draw: the draw takes what there is)
        assert 0 < len(rows) <= 6 and {r["split"] for r in rows} == {split}, (source, rows)
        assert all(holdout.is_heldout(parse_line(r["metadata"])) is held for r in rows), source
    assert set(get_lake(lake).read("prompts", 9, "self").column("split").to_pylist()) == {"heldout"}
