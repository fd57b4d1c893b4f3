"""Session-wide fixtures: a fresh Prefect home and test harness, one shared Ray instance.

Both are lazy: a test that asks for neither pays for neither. Prefect keeps results and its
database under PREFECT_HOME, so every test session gets its own, never the user's ~/.prefect.
"""

from __future__ import annotations

import os
import tempfile

import pytest

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

    with prefect_test_harness(server_startup_timeout=None):  # PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS
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


SMOKE_ROUND = {"n_prompts": 4, "images_per_prompt": 2, "workers": 2, "lock_timeout_s": 2.0}


@pytest.fixture(scope="session")
def smoke_round_lake(smoke_lake, tmp_path_factory):
    """A copy of smoke_lake with one undisturbed round (SMOKE_ROUND): (lake, the flow's result)."""
    import shutil

    from flows.pipeline import self_enhancement_round

    lake = tmp_path_factory.mktemp("smoke-round") / "lake"
    shutil.copytree(smoke_lake, lake)
    return lake, self_enhancement_round(lake=str(lake), **SMOKE_ROUND)
