"""Ray actors: model workers that hold a checkpoint on a device, and a pool that shards work.

A `ModelWorker` wraps `illume_core.engine.Engine` (sample, assess, answer) and asks for a GPU
only when the cluster has one (an actor asking for a missing GPU would wait forever). A
`WorkerPool` shards items by a stable hash of their key, so any shard can be redone with the
same result; a call lost to an actor crash is resubmitted, and since workers only return rows
(the task writes the partition once, after every shard is in), a redo is never double-counted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

log = logging.getLogger(__name__)

LOST_CALL_ERRORS = (ActorUnavailableError, ActorDiedError, RayActorError)


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to RAY_ADDRESS when set (a cluster), else start a local instance once."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


def largest_node_cpus() -> int:
    """The CPU count of the cluster's largest live node (the trainer's torch thread count)."""
    ensure_ray()
    cpus = [n["Resources"].get("CPU", 1) for n in ray.nodes() if n["Alive"]]
    return max(1, int(max(cpus, default=1)))


_PINNED_THREADS: list[int] = []  # the innermost pinned_train_threads block's count, if any


@contextlib.contextmanager
def pinned_train_threads():
    """Fix the trainer's thread count for a flow run at the cluster's shape when it starts.

    Float sums depend on the thread count, so a stage trained after a node was lost (fewer CPUs
    on the largest live node) would end with other weights than the same stage on the cluster
    the run started on; inside this block every `train_on_actor` uses the count taken here.
    """
    _PINNED_THREADS.append(largest_node_cpus())
    try:
        yield _PINNED_THREADS[-1]
    finally:
        _PINNED_THREADS.pop()


def trainer_threads(threads: int | None = None) -> int:
    """The trainer's torch threads: as given, else pinned by the flow run, else the largest node's CPUs."""
    return threads or (_PINNED_THREADS[-1] if _PINNED_THREADS else largest_node_cpus())


def gpus_per_worker() -> float:
    """1 GPU per worker when the cluster has GPUs, else 0 (CPU workers)."""
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def shard_of(key: str, n: int) -> int:
    """Stable shard index of a key (the same on every machine and run, unlike hash())."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % n


@ray.remote(max_restarts=3, max_task_retries=0)
class ModelWorker:
    """Holds one checkpoint on one device and runs the engine's batch methods on request.

    `crash_on` (tests and the fault matrix) names a method whose first call kills this process,
    once per `crash_marker` file, to prove that lost calls are redone and not double-counted.
    """

    def __init__(
        self,
        checkpoint: str,
        device: str | None = None,
        threads: int = 1,
        crash_on: str | None = None,
        crash_marker: str | None = None,
    ) -> None:
        import torch

        from illume_core.engine import Engine

        torch.set_num_threads(threads)
        self.crash_on, self.crash_marker = crash_on, crash_marker
        self.engine = Engine(checkpoint, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def ping(self) -> str:
        return self.engine.device

    def call(self, method: str, items: list[dict], kwargs: dict) -> tuple[list[dict], float]:
        """Run engine.<method>(items, **kwargs); returns its rows and the compute seconds."""
        if self.crash_on == method and self.crash_marker and not os.path.exists(self.crash_marker):
            with open(self.crash_marker, "w") as f:
                f.write(str(os.getpid()))
            os._exit(137)  # like a SIGKILL in the middle of the call
        t0 = time.perf_counter()
        rows = getattr(self.engine, method)(items, **kwargs)
        return rows, time.perf_counter() - t0


class WorkerPool:
    """`size` ModelWorkers on one checkpoint; `map` shards items over them deterministically."""

    def __init__(
        self,
        checkpoint: str,
        size: int = 1,
        threads: int = 1,
        max_redos: int = 3,
        crash_on: str | None = None,
        crash_marker: str | None = None,
        place_timeout_s: float | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"a worker pool needs at least one worker, got size={size}")
        self.checkpoint, self.size, self.max_redos = checkpoint, size, max_redos
        # how long a worker may take to be placed and load its checkpoint before its shard goes
        # to a live worker (raise it for models that load slowly)
        self.place_timeout_s = place_timeout_s or float(os.environ.get("ILLUME_PLACE_TIMEOUT_S", "120"))
        # what get_pool compares to decide whether a pool must be rebuilt with other fault options
        self.options = {k: v for k, v in {"crash_on": crash_on, "crash_marker": crash_marker}.items() if v}
        self._gpus, self._threads = gpus_per_worker(), threads
        self._crash = (crash_on, crash_marker)
        self.workers = [self._new_worker(i == 0) for i in range(size)]
        self.redone = 0  # calls resubmitted after a lost actor, for the records
        self.compute_seconds = 0.0
        self._settle()

    def _settle(self) -> None:
        """Wait until every worker is up; one the cluster cannot place within place_timeout_s
        (a node was lost) hands its shard to a live worker, so the pool works on what is left.

        Shards stay keyed by `size`, so the rows are the same whichever actor runs a shard.
        """
        pings = {w.ping.remote(): i for i, w in enumerate(self.workers)}
        ready, _ = ray.wait(list(pings), num_returns=len(pings), timeout=self.place_timeout_s)
        up = []
        for ref in ready:
            try:
                ray.get(ref)
                up.append(pings[ref])
            except LOST_CALL_ERRORS:
                pass
        if len(up) == len(self.workers):
            return
        if not up:
            raise RuntimeError(
                f"none of {len(self.workers)} model workers came up within {self.place_timeout_s:.0f} s: "
                "the cluster lacks the CPUs/GPUs they ask for, or they fail loading the checkpoint "
                "(check `ray status` and the worker logs)"
            )
        up.sort()
        for i in range(len(self.workers)):
            if i not in up:
                ray.kill(self.workers[i], no_restart=True)
                self.workers[i] = self.workers[up[i % len(up)]]
                log.warning(
                    "model worker %d not placed within %.0f s; its shard runs on worker %d",
                    i,
                    self.place_timeout_s,
                    up[i % len(up)],
                )

    def _new_worker(self, first: bool):
        crash_on, marker = self._crash
        return ModelWorker.options(num_gpus=self._gpus, num_cpus=self._threads).remote(
            self.checkpoint, None, self._threads, crash_on if first else None, marker
        )

    def _answers(self, worker) -> bool:
        """Whether `worker` answers a ping within place_timeout_s (a restart included)."""
        ready, _ = ray.wait([worker.ping.remote()], timeout=self.place_timeout_s)
        if not ready:
            return False
        try:
            ray.get(ready[0])
            return True
        except LOST_CALL_ERRORS:
            return False

    def _replacement(self, i: int):
        """A worker for shard i after its call was lost: the same actor if it is back (Ray restarts
        a crashed worker), else a new one if the cluster places it within place_timeout_s, else a
        live worker of this pool (the shard then runs after that worker's own).

        A lost node takes its CPUs with it: a restart or a new actor that asks for them would
        wait forever, and the round would hang instead of finishing on the nodes that are left.
        """
        dead = self.workers[i]
        if self._answers(dead):
            return dead
        ray.kill(dead, no_restart=True)  # a restart still pending must not take the CPUs later
        fresh = self._new_worker(i == 0)
        if self._answers(fresh):
            return fresh
        ray.kill(fresh, no_restart=True)
        live = [w for w in self.workers if w is not dead]
        if not live:
            raise RuntimeError(
                f"no model worker could be placed within {self.place_timeout_s:.0f} s and none is left "
                "alive: the cluster has lost the CPUs/GPUs the pool needs (check `ray status`)"
            )
        log.warning(
            "no room for a new worker within %.0f s; shard %d moves to a live worker", self.place_timeout_s, i
        )
        return live[i % len(live)]

    def map(
        self,
        method: str,
        items: Sequence[dict],
        key: Callable[[dict], str],
        kwargs: dict | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[dict]:
        """Run `method` over all items, one call per shard; rows come back in shard-then-item order.

        A shard whose call is lost to an actor crash is resubmitted (up to max_redos times);
        each shard's rows are kept once, so a redo never double-counts.
        """
        shards: list[list[dict]] = [[] for _ in range(self.size)]
        for it in items:
            shards[shard_of(key(it), self.size)].append(it)
        kwargs = kwargs or {}
        pending = {i: self.workers[i].call.remote(method, s, kwargs) for i, s in enumerate(shards) if s}
        results: dict[int, list[dict]] = {}
        tries = dict.fromkeys(pending, 0)
        total = len(pending)
        while pending:
            ready, _ = ray.wait(list(pending.values()), num_returns=1)
            i = next(k for k, v in pending.items() if v == ready[0])
            try:
                rows, seconds = ray.get(ready[0])
            except LOST_CALL_ERRORS as e:
                tries[i] += 1
                if tries[i] > self.max_redos:
                    raise RuntimeError(
                        f"shard {i} of {method!r} was lost {tries[i]} times (last: {e}); "
                        "the workers keep crashing: check their logs (ray logs) before re-running"
                    ) from e
                self.redone += 1
                log.warning("shard %d of %s lost (%s); redoing it", i, method, e)
                self.workers[i] = self._replacement(i)
                pending[i] = self.workers[i].call.remote(method, shards[i], kwargs)
                continue
            del pending[i]
            results[i] = rows
            self.compute_seconds += seconds
            if progress is not None:
                progress(len(results), total)
        return [row for i in sorted(results) for row in results[i]]

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w, no_restart=True)
        self.workers = []


_POOLS: dict[tuple[str, int], WorkerPool] = {}


def get_pool(checkpoint: str, size: int = 1, **options: Any) -> WorkerPool:
    """A long-lived pool per (checkpoint, size) in this process, so tasks share loaded models.

    Tasks look pools up here instead of taking actor handles as inputs: a handle's hash changes
    every run and would break Prefect's cache keys.
    """
    k = (checkpoint, size)
    fault = os.environ.get("ILLUME_FAULT_CRASH")  # "method:marker-file", for the fault matrix
    if fault and not options:
        method, marker = fault.split(":", 1)
        options = {"crash_on": method, "crash_marker": marker}
    if k not in _POOLS or (options and _POOLS[k].options != options):
        # one pool at a time: workers of another checkpoint would hold the CPUs (or GPUs) the new
        # pool needs, and Ray would wait forever to place it
        shutdown_pools()
        ensure_ray()
        _POOLS[k] = WorkerPool(checkpoint, size, **options)
    return _POOLS[k]


def shutdown_pools() -> None:
    for p in _POOLS.values():
        p.shutdown()
    _POOLS.clear()


@ray.remote(max_restarts=0)
class Trainer:
    """Runs one stage job (illume_core.jobs.run_stage) in its own process, on a GPU when there is one.

    The trainer writes checkpoint folders only; the calling task records them in the lake, so the
    flow's writer lock is never needed by another process.
    """

    def run(self, settings_json: str, stage: str, parent: str, root: str, threads: int, kwargs: dict):
        from illume_core.jobs import run_stage
        from illume_core.settings import PipelineSettings

        return run_stage(
            PipelineSettings.model_validate_json(settings_json),
            stage,
            parent,
            root,
            threads=threads,
            **kwargs,
        )


def train_on_actor(
    settings_json: str,
    stage: str,
    parent: str,
    root: str,
    threads: int | None = None,
    on_progress: Callable[[int, int, float], None] | None = None,
    **kwargs: Any,
):
    """Run a stage on a fresh Trainer actor (one GPU when the cluster has them, else all CPU threads).

    With several GPUs in the cluster (or ILLUME_TRAIN_WORKERS=N set), the stage runs data-parallel
    on N Ray Train workers instead (`train_data_parallel`).

    Worker pools are shut down first: their actors would hold the CPUs or GPU the trainer needs.
    A trainer that dies takes its call with it; the task's retry starts a new one, which resumes
    from the job's last resumable checkpoint.
    """
    ensure_ray()
    shutdown_pools()
    n_gpus = int(ray.cluster_resources().get("GPU", 0))
    workers = int(os.environ.get("ILLUME_TRAIN_WORKERS", "0")) or (n_gpus if n_gpus >= 2 else 1)
    if workers > 1:
        return train_data_parallel(
            settings_json, stage, parent, root, workers, use_gpu=n_gpus >= workers, **kwargs
        )
    gpus = gpus_per_worker()
    # a fixed count (pinned by the flow run, else the largest node's CPUs), not what happens to
    # be free this instant: a retry right after a crash sees other free CPUs, float sums depend
    # on the thread count, and a resumed stage must end with the weights of an uninterrupted one
    threads = trainer_threads(threads)
    actor = Trainer.options(num_gpus=gpus, num_cpus=1).remote()
    # the trainer reports its step through a small file the caller polls (works across nodes
    # that share the checkpoint folder, and needs no channel back into this process)
    os.makedirs(root, exist_ok=True)
    progress_file = os.path.join(root, f"_progress-{os.getpid()}-{time.time_ns()}.json")
    try:
        ref = actor.run.remote(
            settings_json, stage, parent, root, threads, {**kwargs, "progress_file": progress_file}
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
                return ray.get(ref)
    finally:
        ray.kill(actor, no_restart=True)
        if os.path.exists(progress_file):
            os.remove(progress_file)


def train_data_parallel(
    settings_json: str, stage: str, parent: str, root: str, workers: int, use_gpu: bool, **kwargs: Any
):
    """Run a stage with Ray Train's TorchTrainer: `workers` DDP ranks (GPUs, or CPUs with gloo).

    Each rank trains on its own batches (illume_core.jobs offsets the data seed by the rank);
    gradients are averaged by DistributedDataParallel; rank 0 writes the checkpoint and a small
    JSON of its result beside it, which this function reads back.
    """
    import json
    import tempfile
    import uuid

    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from illume_core.jobs import StageResult

    result_file = os.path.join(root, f"_dp-{uuid.uuid4().hex}.json")

    def loop(config: dict) -> None:
        import ray.train
        from ray.train.torch import prepare_model

        from illume_core.jobs import run_stage
        from illume_core.settings import PipelineSettings

        rank = ray.train.get_context().get_world_rank()
        res = run_stage(
            PipelineSettings.model_validate_json(config["settings"]),
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
            "settings": settings_json,
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
