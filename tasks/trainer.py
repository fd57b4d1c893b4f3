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
from tasks.cluster import ensure_ray, gpus_per_worker, s3_runtime_env, trainer_threads
from tasks.pool import shutdown_pools


@ray.remote(max_restarts=0)
class Trainer:
    """Runs one stage job (illume_core.train.jobs.run_stage) in its own process, on a GPU when there is one.

    The trainer writes checkpoint folders only; the calling task records them in the lake, so the
    flow's writer lock is never needed by another process. For a bucket lake it reads the parent
    from the bucket (once per node), trains into this node's cache and uploads the new checkpoint:
    its node shares nothing with the driver's but the bucket.
    """

    def run(self, settings: PipelineSettings, stage: str, parent: str, lake: str, threads: int, kwargs: dict):
        return run_stage_for_lake(settings, stage, parent, lake, threads=threads, **kwargs)


def run_stage_for_lake(settings: PipelineSettings, stage: str, parent: str, lake: str, **kwargs):
    """`run_stage` on this node for a lake: the parent read through `local_checkpoint`, the new
    checkpoint written under `checkpoint_root(lake)` and published (`StageResult.path` is then the
    lake's location of it: a local path, or an s3:// URI)."""
    from illume_core.train.jobs import run_stage
    from storage import blobs

    res = run_stage(settings, stage, blobs.local_checkpoint(parent), blobs.checkpoint_root(lake), **kwargs)
    if kwargs.get("rank", 0) == 0:
        res.path = blobs.publish_checkpoint(lake, res.path)
    return res


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
    return Trainer.options(num_gpus=gpus, num_cpus=1, runtime_env=s3_runtime_env()).remote()


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
    lake: str,
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
    from storage.blobs import checkpoint_root, uri

    # the lake as an absolute location: actors (and Ray Train's ranks) run in other folders
    lake = uri(lake)
    ensure_ray()
    shutdown_pools()
    n_gpus = int(ray.cluster_resources().get("GPU", 0))
    workers = int(os.environ.get("ILLUME_TRAIN_WORKERS", "0")) or (n_gpus if n_gpus >= 2 else 1)
    if workers > 1:
        return train_data_parallel(
            settings, stage, parent, lake, workers, use_gpu=n_gpus >= workers, **kwargs
        )
    gpus = gpus_per_worker()
    # a fixed count (pinned by the flow run, else the largest node's CPUs), not what happens to
    # be free this instant: a retry right after a crash sees other free CPUs, float sums depend
    # on the thread count, and a resumed stage must end with the weights of an uninterrupted one
    threads = trainer_threads(threads)
    actor = _take_trainer(gpus)
    # the trainer reports its step through a small file the caller polls (works across nodes
    # that share the checkpoint folder, and needs no channel back into this process; a bucket
    # lake's trainer on another node trains without progress lines here)
    root = checkpoint_root(lake)
    os.makedirs(root, exist_ok=True)
    progress_file = os.path.join(root, f"_progress-{os.getpid()}-{time.time_ns()}.json")
    try:
        ref = actor.run.remote(
            settings, stage, parent, lake, threads, {**kwargs, "progress_file": progress_file}
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
    settings: PipelineSettings, stage: str, parent: str, lake: str, workers: int, use_gpu: bool, **kwargs: Any
):
    """Run a stage with Ray Train's TorchTrainer: `workers` DDP ranks (GPUs, or CPUs with gloo).

    Each rank trains on its own batches (illume_core.train.jobs offsets the data seed by the rank);
    gradients are averaged by DistributedDataParallel; rank 0 writes (and, for a bucket lake,
    uploads) the checkpoint and a small JSON of its result into the lake, which this function
    reads back.
    """
    import json
    import tempfile
    import uuid

    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from illume_core.train.jobs import StageResult
    from storage import blobs

    shutdown_trainer()  # its CPU (or GPU) is one the ranks need
    result_file = blobs.uri(lake, f"checkpoints/_dp-{uuid.uuid4().hex}.json")

    def loop(config: dict) -> None:
        import ray.train
        from ray.train.torch import prepare_model

        from storage.blobs import write_bytes_at

        os.environ.update(config["s3_env"])  # a bucket lake's endpoint and credentials on every rank
        rank = ray.train.get_context().get_world_rank()
        res = run_stage_for_lake(
            config["settings"],
            config["stage"],
            config["parent"],
            config["lake"],
            rank=rank,
            threads=1,
            device=None if use_gpu else "cpu",
            wrap=lambda m: prepare_model(m, parallel_strategy_kwargs={"find_unused_parameters": True}),
            **config["kwargs"],
        )
        if rank == 0:
            doc = {**res.__dict__, "compute_seconds": res.compute_seconds * workers}
            write_bytes_at(config["result_file"], json.dumps(doc).encode())

    trainer = TorchTrainer(
        loop,
        train_loop_config={
            "settings": settings,
            "stage": stage,
            "parent": parent,
            "lake": blobs.uri(lake),
            "s3_env": (s3_runtime_env() or {}).get("env_vars", {}),
            "kwargs": kwargs,
            "result_file": result_file,
        },
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(storage_path=tempfile.mkdtemp(prefix="illume-train-"), name=stage),
    )
    trainer.fit()
    doc = blobs.read_bytes(result_file)
    if doc is None:
        raise RuntimeError(f"the data-parallel ranks ended without rank 0's result ({result_file})")
    blobs.remove(result_file)
    return StageResult(**json.loads(doc))
