"""Session-wide fixtures: a fresh Prefect home and test harness, one shared Ray instance.

Both are lazy: a test that asks for neither pays for neither. Prefect keeps results and its
database under PREFECT_HOME, so every test session gets its own, never the user's ~/.prefect.
"""

from __future__ import annotations

import os
import tempfile

import pytest

from illume_core.settings import RoundConfig

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="illume-prefect-home-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# a loaded machine (training beside the tests) can take longer than Prefect's 30 s to start a server
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for the whole session (about 9 s to start, once)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(
        server_startup_timeout=None
    ):  # PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS
        yield


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance shared by every test that needs Ray."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def smoke_lake(tmp_path_factory, prefect_harness, ray_session):
    """A lake with a smoke-budget base model, trained once per session (copy it before writing)."""
    from flows.pipeline import train_pipeline

    lake = tmp_path_factory.mktemp("smoke-lake") / "base"
    out = train_pipeline(lake=str(lake), budget="smoke", workers=2)
    assert (lake / "checkpoints" / "current").is_file() and out["shapeseval_overall"] is not None
    return lake


# the smoke round's keyword arguments to self_enhancement_round: its knobs and how it runs
SMOKE_ROUND = {"config": RoundConfig(n_prompts=4, images_per_prompt=2), "workers": 2, "lock_timeout_s": 2.0}


@pytest.fixture(scope="session")
def smoke_round_lake(smoke_lake, tmp_path_factory):
    """A copy of smoke_lake with one undisturbed round (SMOKE_ROUND): (lake, the flow's result)."""
    import shutil

    from flows.pipeline import self_enhancement_round

    lake = tmp_path_factory.mktemp("smoke-round") / "lake"
    shutil.copytree(smoke_lake, lake)
    return lake, self_enhancement_round(lake=str(lake), **SMOKE_ROUND)


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on loopback (skips without moto), configured only through the usual
    environment variables, as any S3 endpoint would be."""
    pytest.importorskip("moto", reason="the S3 tests need moto's server (the dev extras install it)")
    from moto.server import ThreadedMotoServer

    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "illume-test",
        "AWS_SECRET_ACCESS_KEY": "illume-test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    yield env
    srv.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The server's endpoint and credentials in the environment for one test (later tests on
    local lakes then run without them)."""
    from storage.blobs import s3_filesystem

    for k, v in s3_server.items():
        monkeypatch.setenv(k, v)
    s3_filesystem.cache_clear()
    yield s3_server
    s3_filesystem.cache_clear()


@pytest.fixture
def bucket(s3_env, tmp_path, monkeypatch):
    """A new, empty bucket on the server; this test's catalogs and node cache in its tmp_path."""
    import uuid

    import boto3

    monkeypatch.setenv("ILLUME_CATALOG_CACHE", str(tmp_path / "catalogs"))
    monkeypatch.setenv("ILLUME_NODE_CACHE", str(tmp_path / "node-cache"))
    name = f"illume-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def flow_task_runs(flow_run_id) -> list:
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
