"""The lake on object storage, against a real S3-compatible server on loopback (moto's server).

Every test gets its own bucket. The server runs in this process's thread (`ThreadedMotoServer`),
the clients talk HTTP to it exactly as to any S3 endpoint, configured only through the usual
environment variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...). Writers killed mid-write are
real subprocesses (`python -m storage.lake`) SIGKILLed at a named stage.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("moto", reason="the S3 tests need moto's server (the dev extras install it)")

from storage.lake import Lake, LakeConflictError, LakeWriteError, content_digest  # noqa: E402
from storage.lock import LakeBusyError, WriterLock  # noqa: E402
from storage.objstore import LakeURIError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _rows(table: str, n: int = 6, tag: str = "a") -> list[dict]:
    """Valid rows of `table` for round 1 (built from the row models' required fields)."""
    from storage.schemas import TABLES

    model = TABLES[table].model
    rows = []
    for i in range(n):
        row = {}
        for name, f in model.model_fields.items():
            if not f.is_required():
                continue
            ann = str(f.annotation)
            if name == "round":
                row[name] = 1
            elif "Literal" in ann:
                from typing import get_args

                row[name] = get_args(f.annotation)[0]
            elif "list" in ann:
                row[name] = [i, i + 1]
            elif "bytes" in ann:
                row[name] = bytes([i]) * 4
            elif "bool" in ann:
                row[name] = bool(i % 2)
            elif "int" in ann:
                row[name] = i
            elif "float" in ann:
                row[name] = i / 10
            elif "datetime" in ann:
                from datetime import UTC, datetime

                row[name] = datetime(2026, 12, 3, tzinfo=UTC)
            else:
                row[name] = f"{name}-{tag}-{i}"
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------ URIs


def test_unsupported_uris_are_refused_never_rewritten(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for root in ("gs://b/lake", "az://c/lake", "s3:/illume-bar/lake", "http://x/lake", "s3:///lake"):
        with pytest.raises(LakeURIError, match="not supported|no bucket"):
            Lake(root)
    assert list(tmp_path.iterdir()) == []  # no folder named `s3:` (or anything else) appeared


def test_a_missing_bucket_is_a_clear_error(s3_env):
    with pytest.raises(LakeWriteError, match="no bucket 'illume-no-such-bucket'.*an existing bucket"):
        Lake("s3://illume-no-such-bucket/lake")


# ------------------------------------------------------------------------------ reads and writes


def test_bucket_lake_equals_local_lake_digest_for_digest(bucket, tmp_path):
    s3 = Lake(f"s3://{bucket}/lake")
    local = Lake(tmp_path / "lake")
    for lk in (s3, local):
        lk.write_partition("samples", 1, _rows("samples", 8), producer="sample", part="self")
        lk.write_partition("judgments", 1, _rows("judgments", 5), producer="judge")
    for t in ("samples", "judgments"):
        assert [(p.round, p.part, p.rows, p.digest) for p in s3.partitions(t)] == [
            (p.round, p.part, p.rows, p.digest) for p in local.partitions(t)
        ]
        assert s3.read(t).equals(local.read(t))
        assert s3.digest(t, 1) == local.digest(t, 1) == content_digest(local.read(t, 1))
    # idempotent: the same rows again rewrite nothing; a file describes itself
    again = s3.write_partition("samples", 1, _rows("samples", 8), producer="sample", part="self")
    assert again.written is False and s3.manifest("samples")["version"] == 1
    meta = s3.file_metadata(again.uri)
    assert meta["illume.table"] == "samples" and meta["illume.content_digest"] == again.digest
    # the lease object is gone once the writer is done
    assert s3.fs.get_file_info(f"{bucket}/lake/_writer.lock").type.name == "NotFound"


def test_sql_over_a_bucket_lake(bucket):
    from typer.testing import CliRunner

    from flows.cli import app
    from storage.catalog import catalog_path, query

    lake = Lake(f"s3://{bucket}/lake")
    lake.write_partition("samples", 1, _rows("samples", 7), producer="sample", part="self")
    assert query(lake, "SELECT count(*) AS n, min(round) AS r, min(part) AS p FROM samples").to_pylist() == [
        {"n": 7, "r": 1, "p": "self"}
    ]
    assert query(lake, "SELECT count(*) AS n FROM round_scores").to_pylist() == [{"n": 0}]
    assert catalog_path(lake).is_file() and not catalog_path(lake).is_relative_to(Path.cwd())
    # a newer commit: the reader's catalog is rebuilt because its manifest versions moved on
    lake.write_partition("samples", 1, _rows("samples", 3, "b"), producer="sample", part="self")
    res = CliRunner().invoke(
        app, ["sql", "SELECT count(*) AS n FROM samples", "--lake", f"s3://{bucket}/lake", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {"n": 3}
    res = CliRunner().invoke(app, ["sql", "SELECT 1", "--lake", "gs://b/lake"])
    assert res.exit_code != 0 and "not supported" in res.output


# ------------------------------------------------------------------------------ commits and races


def test_a_commit_on_a_stale_manifest_loses_and_loses_nothing(bucket):
    """Writer A stalls past its lease's expiry; B takes the lease over and commits; A's commit
    then fails with a clear error and B's data is intact (the manifest's conditional write)."""
    a = Lake(f"s3://{bucket}/lake", lock_ttl_s=1.0, lock_timeout_s=5)
    b = Lake(f"s3://{bucket}/lake", lock_ttl_s=1.0, lock_timeout_s=5)
    a.write_partition("samples", 1, _rows("samples", 4, "old"), producer="first")
    stalled = threading.Event()
    proceed = threading.Event()
    upload = a._upload

    def slow_upload(*args, **kw):
        size = upload(*args, **kw)
        a._lock._stop.set()  # A's process stalls: no heartbeat
        stalled.set()
        proceed.wait(30)
        return size

    a._upload = slow_upload
    errors: list[BaseException] = []

    def write_a():
        try:
            a.write_partition("samples", 1, _rows("samples", 5, "A"), producer="A")
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=write_a)
    t.start()
    assert stalled.wait(30)
    time.sleep(1.6)  # A's heartbeat is now older than the lease's ttl
    b.write_partition("samples", 1, _rows("samples", 6, "B"), producer="B")
    assert b._lock.recovered is not None and b._lock.recovered.owner == "A"
    proceed.set()
    t.join(30)
    assert len(errors) == 1 and isinstance(errors[0], LakeConflictError), errors
    assert "another writer committed" in str(errors[0]) and "not visible" in str(errors[0])
    got = Lake(f"s3://{bucket}/lake").read("samples", 1)
    assert got.num_rows == 6 and set(got.column("sample_key").to_pylist()) == {
        r["sample_key"] for r in _rows("samples", 6, "B")
    }


def test_racing_manifest_commits_exactly_one_wins(bucket):
    lake = Lake(f"s3://{bucket}/lake")
    lake.write_partition("samples", 1, _rows("samples", 2), producer="seed")
    manifest, tag = lake._manifest("samples")
    results: list[str] = []
    barrier = threading.Barrier(4)

    def commit(i: int) -> None:
        barrier.wait()
        try:
            lake._write_manifest("samples", {**manifest, "version": manifest["version"] + 1, "by": i}, tag)
            results.append(f"won {i}")
        except LakeConflictError:
            results.append("lost")

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results)[:3] == ["lost"] * 3 and sum(r.startswith("won") for r in results) == 1
    assert lake.manifest("samples")["by"] == int(next(r for r in results if r.startswith("won")).split()[1])


# ------------------------------------------------------------------------------ the lease


def test_the_lease_refuses_a_live_holder_and_recovers_a_dead_one(bucket):
    root = f"s3://{bucket}/lake"
    holder = Lake(root)
    with holder.writer(owner="sample"):
        with pytest.raises(LakeBusyError, match=rf"'sample' \(pid {os.getpid()} on .*waited 1 s"):
            with Lake(root, lock_timeout_s=1.0).writer(owner="other"):
                pass
    lake = Lake(root, lock_timeout_s=3.0, lock_ttl_s=60)
    lock = WriterLock(lake.fs, lake.root, "x", store=lake.store)
    key = lock.path
    # a holder on this host whose pid is gone: stale at once
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    now = time.time()
    rec = {
        "owner": "crashed",
        "pid": int(dead.stdout),
        "host": os.uname().nodename,
        "started_at": now,
        "heartbeat": now,
    }
    lake.store.put(key, json.dumps(rec).encode(), None)
    with lake.writer(owner="next"):
        assert lake._lock.recovered.owner == "crashed"
    # a holder on another node: stale only once its heartbeat is older than the ttl
    rec = {**rec, "owner": "node-b", "host": "node-b", "pid": 1, "heartbeat": time.time()}
    lake.store.put(key, json.dumps(rec).encode(), None)
    with pytest.raises(LakeBusyError, match="'node-b' \\(pid 1 on node-b"):
        with Lake(root, lock_timeout_s=1.0).writer(owner="next"):
            pass
    _, etag = lake.store.get(key)
    lake.store.put(key, json.dumps({**rec, "heartbeat": time.time() - 61}).encode(), etag)
    fresh = Lake(root, lock_timeout_s=3.0)
    with fresh.writer(owner="next"):
        assert fresh._lock.recovered.owner == "node-b"
    assert lake.store.get(key) == (None, None)


# ------------------------------------------------------------------------------ killed writers


def _killed_writer(root: str, tmp_path: Path, stage: str, rows: list[dict]) -> None:
    data = tmp_path / f"rows-{stage}.json"
    data.write_text(json.dumps(rows, default=str))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ILLUME_LAKE_PAUSE": f"{stage}:60"}
    p = subprocess.Popen(
        [sys.executable, "-m", "storage.lake", root, "samples", "1", str(data), "killed"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = p.stdout.readline()
        assert line.strip() == f"illume-lake paused at {stage}", line + p.stdout.read()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)


@pytest.mark.parametrize("stage", ["uploading", "staged", "committed"])
def test_a_writer_killed_mid_write_leaves_the_old_or_the_new_state(bucket, tmp_path, stage):
    from storage.catalog import query

    root = f"s3://{bucket}/lake"
    old, new = _rows("samples", 4, "old"), _rows("samples", 9, "new")
    Lake(root).write_partition("samples", 1, old, producer="first")
    before = Lake(root).read("samples", 1)
    _killed_writer(root, tmp_path, stage, new)
    reader = Lake(root)
    got = reader.read("samples", 1)
    want = 9 if stage == "committed" else 4
    assert got.num_rows == want
    if stage != "committed":
        assert got.equals(before)  # the old state, whole
    assert query(reader, "SELECT count(*) AS n FROM samples").to_pylist() == [{"n": want}]
    import pyarrow.fs as pafs

    objects = {
        i.path.split("/samples/", 1)[1]
        for i in reader.fs.get_file_info(pafs.FileSelector(f"{bucket}/lake/samples", recursive=True))
        if i.is_file and "/data-" in i.path
    }
    listed = {e["path"] for e in reader.manifest("samples")["files"]}
    unlisted = objects - listed
    # mid-upload: the multipart upload never completed, so there is no object at all; after the
    # upload the object exists but no manifest lists it, so no reader sees it; after the commit
    # it is the listed one (the old file stays, retired, for readers of an older catalog)
    assert len(unlisted) == {"uploading": 0, "staged": 1, "committed": 1}[stage], (objects, listed)
    assert len(listed) == 1
    # the lease of the killed writer (same host, dead pid) is recovered; the next write goes through
    after = Lake(root, lock_timeout_s=5)
    after.write_partition("samples", 1, _rows("samples", 2, "after"), producer="after")
    assert after._lock.recovered is not None and after._lock.recovered.owner == "killed"
    assert Lake(root).read("samples", 1).num_rows == 2


def test_a_holder_whose_lease_was_taken_over_commits_nothing(bucket):
    root = f"s3://{bucket}/lake"
    a = Lake(root, lock_ttl_s=0.6)
    a.write_partition("samples", 1, _rows("samples", 3, "old"), producer="first")
    with pytest.raises(LakeBusyError, match="taken over by 'intruder'"):
        with a.writer(owner="A"):
            _, etag = a.store.get(a._lock.path)
            rec = {
                "owner": "intruder",
                "pid": 1,
                "host": "node-b",
                "started_at": time.time(),
                "heartbeat": time.time() + 60,
            }
            a.store.put(a._lock.path, json.dumps(rec).encode(), etag)  # node-b took the lease over
            deadline = time.monotonic() + 10
            while not a._lock.lost and time.monotonic() < deadline:
                time.sleep(0.05)  # A's next heartbeat finds another version: lost
            a.write_partition("samples", 1, _rows("samples", 5, "A"), producer="A")
    assert Lake(root).read("samples", 1).num_rows == 3  # nothing of A's write is visible
    body, _ = a.store.get(a._lock.path)
    assert json.loads(body)["owner"] == "intruder"  # A's release did not delete node-b's lease
