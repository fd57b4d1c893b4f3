"""The model-worker pool: a shard whose worker is lost is redone once, on a new worker or, when
the cluster has no room for one (a lost node took its CPUs), on a live worker of the pool."""

from __future__ import annotations

import pytest
from model_helpers import save_micro_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "ck"
    save_micro_checkpoint(path)
    return str(path)


ITEMS = [{"id": f"q{i}", "png": None, "question": f"how many circles are there? {i}"} for i in range(6)]


def _key(it: dict) -> str:
    return it["id"]


def _kill_and_wait(ray, actor, timeout_s: float = 30.0) -> None:
    """`ray.kill` only asks: calls sent right after it can still run on the old actor. Wait until
    the actor answers with its death, so the next map really meets a lost worker."""
    import time

    from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError

    ray.kill(actor, no_restart=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=5)
        except ActorDiedError:
            return
        except (GetTimeoutError, RayActorError):  # dying, not yet dead
            pass
        time.sleep(0.1)
    raise AssertionError(f"the killed actor still answers after {timeout_s} s")


def test_lost_worker_without_room_moves_its_shard_to_a_live_worker(ray_session, checkpoint):
    from tasks.pool import ModelWorker, WorkerPool

    ray = ray_session
    pool = WorkerPool(checkpoint, size=2, place_timeout_s=60.0)
    pool.place_timeout_s = 3.0  # up and loaded: from now on only placement can take long
    try:
        undisturbed = pool.map("ask", ITEMS, key=_key, kwargs={"max_new_tokens": 4})
        # a replacement asks for a resource no node has: it can never be placed
        pool._new_worker = lambda first: ModelWorker.options(num_cpus=1, resources={"lost-node": 1}).remote(
            checkpoint, None, 1, None, None
        )
        _kill_and_wait(ray, pool.workers[0])
        again = pool.map("ask", ITEMS, key=_key, kwargs={"max_new_tokens": 4})
        assert again == undisturbed  # same rows, same order, none twice
        assert pool.redone == 1 and pool.workers[0] is pool.workers[1]
    finally:
        pool.shutdown()


def test_lost_worker_with_room_gets_a_new_worker(ray_session, checkpoint):
    from tasks.pool import WorkerPool

    ray = ray_session
    pool = WorkerPool(checkpoint, size=2, place_timeout_s=60.0)
    try:
        undisturbed = pool.map("ask", ITEMS, key=_key, kwargs={"max_new_tokens": 4})
        lost = pool.workers[0]
        _kill_and_wait(ray, lost)
        assert pool.map("ask", ITEMS, key=_key, kwargs={"max_new_tokens": 4}) == undisturbed
        assert pool.redone == 1 and pool.workers[0] is not lost and pool.workers[0] is not pool.workers[1]
    finally:
        pool.shutdown()


def test_no_live_worker_and_no_room_is_a_clear_error(ray_session, checkpoint):
    from tasks.pool import ModelWorker, WorkerPool

    ray = ray_session
    pool = WorkerPool(checkpoint, size=1, place_timeout_s=60.0)
    pool.place_timeout_s = 2.0
    try:
        pool._new_worker = lambda first: ModelWorker.options(num_cpus=1, resources={"lost-node": 1}).remote(
            checkpoint, None, 1, None, None
        )
        ray.kill(pool.workers[0], no_restart=True)
        with pytest.raises(RuntimeError, match="no model worker could be placed"):
            pool.map("ask", ITEMS, key=_key, kwargs={"max_new_tokens": 4})
    finally:
        pool.shutdown()


def test_a_flow_run_pins_the_trainer_threads_at_its_start(ray_session, monkeypatch):
    from tasks import cluster

    with cluster.pinned_train_threads() as n:
        assert n == cluster.largest_node_cpus() == 2  # the session's local Ray has 2 CPUs
        monkeypatch.setattr(cluster, "largest_node_cpus", lambda: 1)  # the largest node is lost
        assert cluster.trainer_threads() == 2 and cluster.trainer_threads(3) == 3
    assert cluster.trainer_threads() == 1  # outside a flow run: the cluster as it is now


def test_a_worker_without_room_at_start_leaves_its_shard_to_a_live_one(ray_session, checkpoint):
    from tasks.pool import ModelWorker, WorkerPool

    class SecondUnplaceable(WorkerPool):
        def _new_worker(self, first: bool):
            if first:
                return super()._new_worker(first)
            return ModelWorker.options(num_cpus=1, resources={"lost-node": 1}).remote(
                checkpoint, None, 1, None, None
            )

    # the rows a whole pool of 2 gives: each shard's answers, shard after shard (computed here,
    # in-process, instead of starting a second pool)
    import torch

    from illume_core.model.engine import Engine
    from tasks.pool import shard_of

    engine = Engine(checkpoint, device="cpu")
    shards = [[it for it in ITEMS if shard_of(_key(it), 2) == i] for i in range(2)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a pool's worker (one thread each): the same sums, the same answers
    try:
        undisturbed = [row for shard in shards for row in engine.ask(shard, max_new_tokens=4)]
    finally:
        torch.set_num_threads(threads)
    # long enough for the first worker to start and load on a busy machine
    pool = SecondUnplaceable(checkpoint, size=2, place_timeout_s=20.0)
    try:
        assert pool.workers[1] is pool.workers[0]
        assert pool.map("ask", ITEMS, key=_key, kwargs={"max_new_tokens": 4}) == undisturbed
    finally:
        pool.shutdown()
