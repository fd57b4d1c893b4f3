"""The fast cases of the fault matrix (issue 7); the long matrix is benchmarks/fault_matrix.py.

A flow process SIGKILLed at the end of `sample` and re-run finishes the round with the lake of an
undisturbed run (same partitions, rows and digests; nothing staged, unlisted or locked left), and
a second round started while one runs refuses with the "another round is running" message.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from storage.lock import LakeBusyError
from tests.conftest import SMOKE_ROUND

ROOT = Path(__file__).resolve().parents[1]
# conftest.SMOKE_ROUND as the flat parameters fm.round_cmd takes (knobs beside workers, lock_timeout_s)
FAST = {"n_prompts": 4, "images_per_prompt": 2, "workers": 2, "lock_timeout_s": 2.0}


def _load_matrix():
    spec = importlib.util.spec_from_file_location("fault_matrix", ROOT / "benchmarks" / "fault_matrix.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fault_matrix"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


fm = _load_matrix()


def _copy(base: Path, dst: Path) -> Path:
    shutil.copytree(base, dst)
    return dst


def _subprocess_round(lake: Path, tmp_path: Path, **env_extra: str):
    # the session's PREFECT_HOME: task results are persisted there (not in the lake), and the
    # re-run in this process must read the cached ones the killed process wrote
    env = {**fm.base_env(tmp_path), "PREFECT_HOME": os.environ["PREFECT_HOME"], **env_extra}
    return fm.Proc(fm.round_cmd(lake, {**FAST, "finetune_steps": None}), env, tmp_path / f"{lake.name}.log")


def _sample_run(lake: Path) -> object:
    from storage.lake import Lake

    return Lake(lake, catalog=False).read("task_runs", 1, "sample-self").to_pylist()[0]["ended_at"]


@pytest.mark.timeout(900)  # the first test to ask trains the session's base lake and round
def test_sigkill_at_end_of_sample_then_rerun_equals_undisturbed(smoke_lake, smoke_round_lake, tmp_path):
    from flows.pipeline import self_enhancement_round
    from storage.lake import Lake

    ref = smoke_round_lake[0]  # the undisturbed round, with the same parameters
    assert json.loads(Lake(ref, catalog=False).read("rounds", 1).to_pylist()[0]["params"])["n_prompts"] == 4
    lake = _copy(smoke_lake, tmp_path / "faulted")
    marker = tmp_path / "killed"
    p = _subprocess_round(lake, tmp_path, ILLUME_FAULT_KILL=f"end:sample:{marker}")
    assert p.wait(300) == -9, p.text[-2000:]
    assert marker.read_text() == "end:sample"  # killed right after sample completed, before assess
    lk = Lake(lake, catalog=False)
    assert [r["status"] for r in lk.read("rounds", 1).to_pylist()] == ["running"]
    assert lk.read("assessments", 1).num_rows == 0
    sampled_at = _sample_run(lake)

    self_enhancement_round(lake=str(lake), **SMOKE_ROUND)  # the same round, no fault
    assert _sample_run(lake) == sampled_at  # sample was a cache hit: its body did not run again
    n, rows, diffs = fm.compare(fm.lake_state(ref), lake)
    assert diffs == [] and n > 40 and rows > 100
    assert fm.integrity(lake) == []
    assert fm.round1_current(lake) == fm.round1_current(ref)


@pytest.mark.timeout(600)
def test_two_rounds_at_once_one_writes_the_other_refuses(smoke_lake, tmp_path):
    from flows.pipeline import self_enhancement_round
    from storage.lake import Lake

    lake = _copy(smoke_lake, tmp_path / "busy")
    first = _subprocess_round(lake, tmp_path)
    try:
        lock = lake / "_writer.lock"

        def first_holds() -> bool:
            try:
                return json.loads(lock.read_text() or "{}").get("pid") == first.p.pid
            except (OSError, ValueError):
                return False

        assert first.wait_for(first_holds, 120), first.text[-2000:]
        t0 = time.monotonic()
        with pytest.raises(LakeBusyError, match=f"pid {first.p.pid}.*another round is running"):
            self_enhancement_round(lake=str(lake), **{**SMOKE_ROUND, "lock_timeout_s": 1.0})
        assert time.monotonic() - t0 < 30
        assert first.p.poll() is None  # the first round still runs: the refused one did not disturb it
    finally:
        first.stop()
    # the lock went with the killed holder (flock): the lake is writable again at once
    with Lake(lake, catalog=False).writer(owner="after", timeout_s=1.0):
        pass
