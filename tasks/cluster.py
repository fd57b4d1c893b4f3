"""The Ray cluster as the flows see it: connecting (or starting a local instance), its shape, the
trainer's torch thread count, and whether workers get a GPU."""

from __future__ import annotations

import contextlib
import os

import ray

# the environment a bucket lake's clients read (storage/objstore.py)
S3_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
)


def s3_runtime_env() -> dict | None:
    """The runtime_env that gives an actor this process's S3 endpoint and credentials (None when
    none are set): a worker on a node started without them, or a local worker started before
    they were set, then reads the same bucket as the flow."""
    env = {k: v for k, v in os.environ.items() if k in S3_ENV}
    return {"env_vars": env} if env else None


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to RAY_ADDRESS when set (a cluster), else start a local instance once."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # no idle Python workers started ahead of the first actor: on a small machine they take
        # CPU from the flow's own start (a fresh `illume round` reached the end of its first task
        # 2.5 s sooner, 19.6-19.8 s against 22.1-22.4 s, alternating; docs/PIPELINE.md); the
        # worker pool's actors start their own
        os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
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
