"""Task plumbing shared by every step: the lake-aware cache policy, partition references,
the task_runs record and progress artifacts. The steps themselves are in tasks/steps.py.

Cache keys never hold the lake's own path: `lake` is left out of them (the records are stored in
that lake, so they cannot be confused with another lake's), and a path inside the lake (a
checkpoint folder, named by its content id) counts by its lake-relative form. So a lake copied,
restored or mounted elsewhere keeps every cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import TASK_SOURCE, CachePolicy, CompoundCachePolicy, Inputs

from illume_core.settings import PipelineSettings
from storage.lake import PartitionInfo
from storage.registry import get_lake, lake_ref, read_sampling, read_settings
from storage.schemas import TaskRunRow


@dataclass
class LakeInputs(CachePolicy):
    """Prefect's INPUTS without the lake's location: `lake` left out, paths in it made lake-relative."""

    exclude: list[str] = field(default_factory=list)

    def compute_key(
        self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
    ) -> str | None:
        lake = (inputs or {}).get("lake")
        named = {
            k: lake_ref(lake, v) if isinstance(lake, str) and isinstance(v, str) else v
            for k, v in (inputs or {}).items()
            if k != "lake"
        }
        if isinstance(named.get("settings"), PipelineSettings):  # keyed by what the names stand for
            named["settings"] = named["settings"].digest()
        return Inputs(exclude=list(self.exclude)).compute_key(task_ctx, named, flow_parameters, **kwargs)

    def __sub__(self, other: str) -> LakeInputs:
        return replace(self, exclude=[*self.exclude, other])


@dataclass
class LakeCachePolicy(CompoundCachePolicy):
    """LakeInputs + TASK_SOURCE, where `policy - "name"` leaves an input out (as INPUTS - "name" does)."""

    def __sub__(self, other: str) -> LakeCachePolicy:
        return replace(self, policies=[p - other if isinstance(p, LakeInputs) else p for p in self.policies])


@dataclass
class ImageSampling(CachePolicy):
    """The setting the lake's drawings are sampled with (`lake_sampling`), as a key: a task that
    draws images gets a new key when that setting changes, not a cached drawing."""

    def compute_key(
        self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
    ) -> str | None:
        return lake_sampling(inputs["lake"]).model_dump_json()


def lake_sampling(lake: str):
    """The sampling setting of every drawing in `lake`: the one the train pipeline chose for its
    base model on tuning prompts (`storage.registry.read_sampling`), or the pipeline's default
    (`IMAGE_SAMPLING`) for a lake trained before it chose one. A SamplingParams."""
    from illume_core.model import sampling  # torch: only when a task runs

    stored = read_sampling(lake)
    return sampling.IMAGE_SAMPLING if stored is None else sampling.SamplingParams.model_validate_json(stored)


def load_settings(lake: str) -> PipelineSettings:
    """The run's settings that `lake` stores (`storage.registry.read_settings`)."""
    return PipelineSettings.from_stored(read_settings(lake))


CACHE_POLICY = LakeCachePolicy(policies=[LakeInputs(), TASK_SOURCE])
# tasks that draw images: their key also holds the sampling setting
DRAWING_CACHE_POLICY = LakeCachePolicy(policies=[LakeInputs(), TASK_SOURCE, ImageSampling()])
RETRIES = {"retries": 2, "retry_delay_seconds": 1}


def _logger():
    """Prefect's run logger inside a run; a plain logger when a task's .fn is called directly."""
    import logging

    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("illume.tasks")


def ref(info: PartitionInfo) -> str:
    """A content-hashed reference to one partition."""
    return f"{info.table}/round={info.round}/part={info.part}#{info.digest[:16]}"


def parse_ref(r: str) -> tuple[str, int, str]:
    """(table, round, part) of a reference made by `ref`."""
    try:
        path, _ = r.split("#", 1)
        table, rnd, part = path.split("/")
        return table, int(rnd.removeprefix("round=")), part.removeprefix("part=")
    except ValueError:
        raise ValueError(f"{r!r} is not a partition reference (table/round=R/part=P#digest)") from None


def read_ref(lake: str, r: str) -> list[dict]:
    table, rnd, part = parse_ref(r)
    return get_lake(lake).read(table, rnd, part).to_pylist()


def record_run(
    lake: str,
    name: str,
    round: int,
    part: str,
    started: datetime,
    rows: int,
    compute_seconds: float,
    status: str = "completed",
) -> None:
    """One task_runs row per task and round (replaced when the task runs again)."""
    from prefect.context import get_run_context

    try:
        flow_run_id = str(get_run_context().task_run.flow_run_id)
    except Exception:  # called outside a Prefect run (tests calling .fn)
        flow_run_id = None
    row = {
        "task": name,
        "round": round,
        "started_at": started,
        "ended_at": datetime.now(UTC),
        "rows": rows,
        "compute_seconds": compute_seconds,
        "status": status,
        "flow_run_id": flow_run_id,
    }
    get_lake(lake).write_partition(
        "task_runs",
        round,
        [TaskRunRow(**row)],
        producer=name,
        part=part,
    )


class Progress:
    """A Prefect progress artifact (0..100) for a long step; a no-op outside a run."""

    def __init__(self, what: str) -> None:
        self.id = None
        self.last = -1.0
        try:
            self.id = create_progress_artifact(0.0, description=what)
        except Exception:
            self.id = None

    def __call__(self, done: int, total: int) -> None:
        pct = 100.0 * done / max(1, total)
        if self.id is not None and (pct - self.last >= 5 or done == total):
            self.last = pct
            try:
                update_progress_artifact(self.id, pct)
            except Exception:
                pass
