"""Training on the cluster: a stage job on a fresh Ray actor (a GPU when there is one), or
data-parallel on Ray Train workers when the cluster has several GPUs."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import ray

from illume_core.settings import PipelineSettings
from tasks.cluster import ensure_ray, gpus_per_worker, trainer_threads
from tasks.pool import shutdown_pools


@ray.remote(max_restarts=0)
class Trainer:
    """Runs one stage job (illume_core.train.jobs.run_stage) in its own process, on a GPU when there is one.

    The trainer writes checkpoint folders only; the calling task records them in the lake, so the
    flow's writer lock is never needed by another process.
    """

    def run(self, settings: PipelineSettings, stage: str, parent: str, root: str, threads: int, kwargs: dict):
        from illume_core.train.jobs import run_stage

        return run_stage(
            settings,
            stage,
            parent,
            root,
            threads=threads,
            **kwargs,
        )


# at most one idle Trainer actor, (gpus, handle), kept between consecutive stages of a run so each
# stage does not pay a new process and its imports (torch, transformers: seconds a stage); a
# worker pool or a data-parallel run frees it first (`shutdown_trainer`), since it holds a CPU
_IDLE: list[tuple[float, Any]] = []


def _take_trainer(gpus: float):
    """The idle trainer when it asked for the same GPUs, else a new one (the old one killed)."""
    if _IDLE and _IDLE[-1][0] == gpus:
        actor = _IDLE.pop()[1]
        try:  # alive? (a lost node or a restarted cluster takes idle actors too)
            ray.get(actor.__ray_ready__.remote(), timeout=30)
            return actor
        except Exception:
            _kill(actor)
    shutdown_trainer()
    return Trainer.options(num_gpus=gpus, num_cpus=1).remote()


def _kill(actor) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # already gone (its node, or the Ray instance it belonged to)
        pass


def shutdown_trainer() -> None:
    """Kill the idle trainer actor, if any, freeing its CPU (and GPU)."""
    while _IDLE:
        _kill(_IDLE.pop()[1])


def train_on_actor(
    settings: PipelineSettings,
    stage: str,
    parent: str,
    root: str,
    threads: int | None = None,
    on_progress: Callable[[int, int, float], None] | None = None,
    **kwargs: Any,
):
    """Run a stage on a Trainer actor (one GPU when the cluster has them, else all CPU threads):
    the previous stage's, kept idle, or a new one.

    With several GPUs in the cluster (or ILLUME_TRAIN_WORKERS=N set), the stage runs data-parallel
    on N Ray Train workers instead (`train_data_parallel`).

    Worker pools are shut down first: their actors would hold the CPUs or GPU the trainer needs.
    A trainer that dies (or whose stage fails) takes its call with it and is not kept; the task's
    retry starts a new one, which resumes from the job's last resumable checkpoint.
    """
    ensure_ray()
    shutdown_pools()
    n_gpus = int(ray.cluster_resources().get("GPU", 0))
    workers = int(os.environ.get("ILLUME_TRAIN_WORKERS", "0")) or (n_gpus if n_gpus >= 2 else 1)
    if workers > 1:
        return train_data_parallel(
            settings, stage, parent, root, workers, use_gpu=n_gpus >= workers, **kwargs
        )
    gpus = gpus_per_worker()
    # a fixed count (pinned by the flow run, else the largest node's CPUs), not what happens to
    # be free this instant: a retry right after a crash sees other free CPUs, float sums depend
    # on the thread count, and a resumed stage must end with the weights of an uninterrupted one
    threads = trainer_threads(threads)
    actor = _take_trainer(gpus)
    # the trainer reports its step through a small file the caller polls (works across nodes
    # that share the checkpoint folder, and needs no channel back into this process)
    os.makedirs(root, exist_ok=True)
    progress_file = os.path.join(root, f"_progress-{os.getpid()}-{time.time_ns()}.json")
    try:
        ref = actor.run.remote(
            settings, stage, parent, root, threads, {**kwargs, "progress_file": progress_file}
        )
        seen = -1
        while True:
            done, _ = ray.wait([ref], timeout=5.0)
            if on_progress is not None and os.path.exists(progress_file):
                try:
                    with open(progress_file) as f:
                        p = json.load(f)
                    if p["step"] != seen:
                        seen = p["step"]
                        on_progress(p["step"], p["total"], p["loss"])
                except (OSError, ValueError, KeyError):
                    pass  # a report being replaced; the next poll reads it
            if done:
                result = ray.get(ref)
                _IDLE.append((gpus, actor))  # kept for the next stage
                return result
    except BaseException:
        _kill(actor)
        raise
    finally:
        if os.path.exists(progress_file):
            os.remove(progress_file)


def train_data_parallel(
    settings: PipelineSettings, stage: str, parent: str, root: str, workers: int, use_gpu: bool, **kwargs: Any
):
    """Run a stage with Ray Train's TorchTrainer: `workers` DDP ranks (GPUs, or CPUs with gloo).

    Each rank trains on its own batches (illume_core.train.jobs offsets the data seed by the rank);
    gradients are averaged by DistributedDataParallel; rank 0 writes the checkpoint and a small
    JSON of its result beside it, which this function reads back.
    """
    import json
    import tempfile
    import uuid

    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from illume_core.train.jobs import StageResult

    shutdown_trainer()  # its CPU (or GPU) is one the ranks need
    result_file = os.path.join(root, f"_dp-{uuid.uuid4().hex}.json")

    def loop(config: dict) -> None:
        import ray.train
        from ray.train.torch import prepare_model

        from illume_core.train.jobs import run_stage

        rank = ray.train.get_context().get_world_rank()
        res = run_stage(
            config["settings"],
            config["stage"],
            config["parent"],
            config["root"],
            rank=rank,
            threads=1,
            device=None if use_gpu else "cpu",
            wrap=lambda m: prepare_model(m, parallel_strategy_kwargs={"find_unused_parameters": True}),
            **config["kwargs"],
        )
        if rank == 0:
            with open(config["result_file"], "w") as f:
                json.dump({**res.__dict__, "compute_seconds": res.compute_seconds * workers}, f)

    os.makedirs(root, exist_ok=True)
    trainer = TorchTrainer(
        loop,
        train_loop_config={
            "settings": settings,
            "stage": stage,
            "parent": parent,
            "root": root,
            "kwargs": kwargs,
            "result_file": result_file,
        },
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(storage_path=tempfile.mkdtemp(prefix="illume-train-"), name=stage),
    )
    trainer.fit()
    try:
        with open(result_file) as f:
            return StageResult(**json.load(f))
    finally:
        if os.path.exists(result_file):
            os.remove(result_file)
