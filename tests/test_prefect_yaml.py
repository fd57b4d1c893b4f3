"""prefect.yaml stays in step with the flows: entrypoints, parameters, schedules, concurrency.

Loads each deployment's entrypoint the way `prefect deploy` does, so a renamed flow or flow
parameter fails here instead of at deploy time or in a scheduled run at 2 a.m.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {
    "nightly-round": "flows/pipeline.py:self_enhancement_round",
    "weekly-eval": "flows/pipeline.py:evaluate_checkpoint",
    "train": "flows/pipeline.py:train_pipeline",
}


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


@pytest.fixture(scope="module")
def deployments(spec) -> dict[str, dict]:
    return {d["name"]: d for d in spec["deployments"]}


def unknown_parameters(flow, params: dict) -> list[str]:
    """Parameters a deployment sets that the flow's signature does not have."""
    accepted = inspect.signature(flow.fn).parameters
    return sorted(set(params) - set(accepted))


def test_the_deploy_command_accepts_the_file(spec):
    # the model `prefect deploy` itself validates prefect.yaml with (a private module: an
    # upgrade that moves it fails here, which is the moment to re-check the file anyway)
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(spec)
    assert sorted(d.name for d in model.deployments) == sorted(EXPECTED)
    assert {d.work_pool.name for d in model.deployments} == {"illume-local"}
    assert all(d.description for d in model.deployments), "every deployment needs a description"


def test_entrypoints_are_flows_that_accept_every_parameter_set(deployments):
    from prefect import Flow
    from prefect.flows import load_flow_from_entrypoint

    for name, entrypoint in EXPECTED.items():
        d = deployments[name]
        assert d["entrypoint"] == entrypoint
        path = entrypoint.split(":")[0]
        assert (ROOT / path).is_file(), f"{name}: {path} does not exist"
        flow = load_flow_from_entrypoint(str(ROOT / entrypoint))
        assert isinstance(flow, Flow)
        params = dict(d.get("parameters") or {})
        for s in d.get("schedules") or []:
            params.update(s.get("parameters") or {})
        assert unknown_parameters(flow, params) == [], f"{name} sets parameters {flow.name} lacks"
        flow.validate_parameters(params)  # and each value has the parameter's type
        # the check above can fail: a renamed parameter is caught
        assert unknown_parameters(flow, {**params, "lake_root": "x"}) == ["lake_root"]


def test_the_rounds_knobs_are_one_round_config_the_server_accepts(deployments):
    """The nightly round's knobs are one `config` mapping: a RoundConfig, and valid under the
    parameter schema the server enforces (`enforce_parameter_schema`) for the deployment and for a
    run's `--param config=...`, which replaces the mapping."""
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools.validation import ValidationError, validate

    from illume_core.settings import RoundConfig

    params = deployments["nightly-round"]["parameters"]
    RoundConfig.model_validate(params["config"])  # a misspelled or bad knob raises
    flow = load_flow_from_entrypoint(str(ROOT / EXPECTED["nightly-round"]))
    schema = parameter_schema(flow.fn).model_dump_for_openapi()
    validate(params, schema, raise_on_error=True)
    validate({**params, "config": {"n_prompts": 8, "assessor": "likelihood"}}, schema, raise_on_error=True)
    for bad in ({"assessor": "oracle"}, {"n_prompt": 8}, {"n_prompts": 0}):  # refused before the run
        with pytest.raises(ValidationError):
            validate({**params, "config": bad}, schema, raise_on_error=True)


def test_schedules_parse_and_the_round_runs_one_at_a_time(deployments):
    from prefect.client.schemas.schedules import CronSchedule

    crons = {}
    for name, d in deployments.items():
        for s in d.get("schedules") or []:
            crons[name] = CronSchedule(cron=s["cron"], timezone=s["timezone"])
    assert crons["nightly-round"].cron == "0 2 * * *"
    assert crons["nightly-round"].timezone == "UTC"
    assert "weekly-eval" in crons and "train" not in crons  # training is on demand only
    assert deployments["nightly-round"]["concurrency_limit"]["limit"] == 1


def test_the_pull_step_enters_the_project_root_of_any_clone(spec):
    steps = spec["pull"]
    assert len(steps) == 1
    ((step, args),) = steps[0].items()
    assert step == "prefect.deployments.steps.set_working_directory"
    # templated from the worker's environment at run time, never one machine's absolute path
    assert args["directory"] == "{{ $ILLUME_ROOT }}"
