"""Ray model workers that hold a checkpoint on a device, and a pool that shards work over them.

A `ModelWorker` wraps `illume_core.model.engine.Engine` (sample, assess, answer) and asks for a GPU
only when the cluster has one (an actor asking for a missing GPU would wait forever). A
`WorkerPool` shards items by a stable hash of their key, so any shard can be redone with the
same result; a call lost to an actor crash is resubmitted, and since workers only return rows
(the task writes the partition once, after every shard is in), a redo is never double-counted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from tasks.cluster import ensure_ray, gpus_per_worker, s3_runtime_env

log = logging.getLogger(__name__)

LOST_CALL_ERRORS = (ActorUnavailableError, ActorDiedError, RayActorError)


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

        from illume_core.model.engine import Engine
        from storage.blobs import local_checkpoint

        torch.set_num_threads(threads)
        self.crash_on, self.crash_marker = crash_on, crash_marker
        # a bucket lake's checkpoint is downloaded once per node (checked against its manifest)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.engine = Engine(local_checkpoint(checkpoint), device=device)

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
        from tasks.trainer import shutdown_trainer  # (the trainer module imports this one)

        shutdown_trainer()  # an idle trainer actor holds a CPU (or GPU) the workers need
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
        return ModelWorker.options(
            num_gpus=self._gpus, num_cpus=self._threads, runtime_env=s3_runtime_env()
        ).remote(self.checkpoint, None, self._threads, crash_on if first else None, marker)

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
    every run and would break Prefect's cache keys. A checkpoint is known by its content id (its
    manifest's), not its path: a copy of a lake (an experiment's arms, a test's fresh lake) reuses
    the workers that already hold the same weights, and a replacement worker loads the latest path.
    """
    from storage.registry import checkpoint_id_of

    k = (checkpoint_id_of(checkpoint), size)
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
    _POOLS[k].checkpoint = checkpoint  # where a replacement worker loads it from
    return _POOLS[k]


def shutdown_pools() -> None:
    for p in _POOLS.values():
        p.shutdown()
    _POOLS.clear()
