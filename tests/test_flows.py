"""The pipeline through Prefect and Ray, on the smoke budget: a round, a rerun, a crash, a busy lake.

One base model is trained once for the module; each test works on its own copy of that lake.
"""

from __future__ import annotations

import shutil

import pytest

from storage.lock import LakeBusyError

ROUND = {"n_prompts": 4, "images_per_prompt": 2, "workers": 2, "lock_timeout_s": 2.0}


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


def _flow_task_runs(flow_run_id) -> list:
    """The task runs of a flow run and of its sub-flow runs (the evaluation), not the sub-flows' own
    placeholder runs in the parent."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        subs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
        )
        ids = [flow_run_id, *(f.id for f in subs)]
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
    return [r for r in runs if not r.name.startswith("evaluation")]


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


def test_round_through_prefect_and_ray(round_lake):
    from storage.registry import get_lake

    lake, out = round_lake
    lk = get_lake(str(lake))
    prompts = lk.read("prompts", 1, "self").num_rows
    samples = lk.read("samples", 1, "self")
    assert samples.num_rows == prompts * ROUND["images_per_prompt"] > 0
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
    runs = _flow_task_runs(state.state_details.flow_run_id)
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
    runs = _flow_task_runs(state.state_details.flow_run_id)
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
    # the flows' per-run options keep the sampling part for the drawing tasks only
    from flows.pipeline import _opts
    from tasks.plumbing import ImageSampling

    def has_sampling(name):
        return any(
            isinstance(p, ImageSampling) for p in _opts(str(tmp_path), [], name)["cache_policy"].policies
        )

    assert has_sampling("sample") and has_sampling("eval-sample") and has_sampling("understand")
    assert not has_sampling("judge") and not has_sampling("evaluate")  # scores what eval-sample drew


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
    from flows.pipeline import self_enhancement_round
    from storage.registry import get_lake
    from tasks.pool import shutdown_pools

    marker = tmp_path / "crashed"
    lake = _copy(base_lake, tmp_path, "lake")
    shutdown_pools()
    monkeypatch.setenv("ILLUME_FAULT_CRASH", f"sample:{marker}")
    self_enhancement_round(lake=str(lake), **ROUND)
    monkeypatch.delenv("ILLUME_FAULT_CRASH")
    shutdown_pools()
    assert marker.exists()  # a worker really died in the middle of sampling
    clean, crashed = get_lake(str(round_lake[0])), get_lake(str(lake))
    for table, part in (("samples", "self"), ("assessments", "self-self"), ("judgments", "self")):
        assert crashed.digest(table, 1, part) == clean.digest(table, 1, part), table


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
    res = train_on_actor(s, "stage3", parent, str(tmp_path / "checkpoints"), steps=2)
    assert len(res.losses) == 2 and all(x == x for x in res.losses)
    manifest = read_manifest(res.path)
    assert manifest["id"] == res.checkpoint_id and manifest["parent"] == read_manifest(parent)["id"]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if not p.name.startswith("_")] == [
        res.checkpoint_id
    ]


def test_a_preference_round_runs_through_prefect_and_trains_on_the_pairs_it_found(base_lake, tmp_path):
    """`--strategy preference`: the round pairs each prompt's accepted and rejected samples (by
    its own assessments), writes them as sft_examples and fine-tunes on exactly those pairs.
    The smoke model rejects every sample it draws, so here that is zero pairs; the DPO loss on
    real pairs is tested in tests/test_preference.py."""
    from flows.pipeline import self_enhancement_round
    from illume_core.model.checkpoint import read_manifest
    from illume_core.self_enhance.reformat import assessment_of
    from storage.registry import get_lake

    lake = _copy(base_lake, tmp_path, "preference")
    out = self_enhancement_round(
        lake=str(lake), **{**ROUND, "n_prompts": 6, "images_per_prompt": 4}, strategies=["preference"]
    )
    lk = get_lake(str(lake))
    verdicts: dict[str, list[bool]] = {}
    for a in lk.read("assessments", 1, "self-self").to_pylist():
        parsed = assessment_of(a)
        if parsed is not None:
            verdicts.setdefault(a["prompt_id"], []).append(parsed.all_yes)
    expected = sum(min(sum(v), len(v) - sum(v)) for v in verdicts.values())
    rows = lk.read("sft_examples", 1).to_pylist()
    assert {r["strategy"] for r in rows} <= {"preference"} and len(rows) == expected
    for r in rows:  # an accepted sample first, a rejected one of the same prompt second
        good, bad = r["image_refs"]
        assert good.split("/")[2] == bad.split("/")[2] == r["prompt_id"]
    run = lk.read("rounds", 1).to_pylist()[0]
    assert run["status"] == out["status"]
    extra = read_manifest(lake / "checkpoints" / run["candidate_checkpoint"])["extra"]
    assert extra["preference_pairs"] == expected


def test_a_likelihood_round_takes_its_margins_from_the_command_to_the_workers(base_lake, tmp_path):
    """`illume round --assessor likelihood --likelihood-margins ...`: the margins reach the Ray
    workers' assessor and are recorded with the round. Margins no counterfactual can beat make
    every verdict "yes", so every sample is accepted and becomes a text-to-image example."""
    import json

    from flows.pipeline import self_enhancement_round
    from illume_core.settings import RoundConfig
    from storage.registry import get_lake

    lake = _copy(base_lake, tmp_path, "likelihood")
    lenient = dict.fromkeys(("object", "count", "color", "spatial"), 1e6)
    self_enhancement_round(
        lake=str(lake),
        **ROUND,
        assessor="likelihood",
        likelihood_margins=lenient,
        strategies=["accepted_t2i"],
    )
    lk = get_lake(str(lake))
    rows = lk.read("assessments", 1, "self-likelihood").to_pylist()
    assert len(rows) == ROUND["n_prompts"] * ROUND["images_per_prompt"]
    assert all(r[f"{d}_verdict"] == "yes" for r in rows for d in lenient) and {
        r["assessor"] for r in rows
    } == {"likelihood"}
    assert lk.read("sft_examples", 1).num_rows == len(rows)  # every image accepted
    params = lk.read("rounds", 1).to_pylist()[0]["params"]
    assert json.loads(params)["likelihood_margins"] == lenient
    assert RoundConfig.from_params(params).likelihood_margins == lenient  # `illume rerun` repeats them
