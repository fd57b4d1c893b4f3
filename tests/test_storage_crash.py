"""Crash safety: a writer SIGKILLed mid-write leaves the old state, and readers never see a mix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from storage.catalog import catalog_is_current, connect_readonly, query
from storage.lake import PAUSE_ENV, Lake

REPO = Path(__file__).resolve().parents[1]


def rows(round: int, values: list[float]) -> list[dict]:
    return [
        dict(
            round=round,
            checkpoint_id="c",
            benchmark="shapeseval",
            tag=f"t{i}",
            metric="accuracy",
            value=v,
            n=1,
        )
        for i, v in enumerate(values)
    ]


def kill_writer_at(root: Path, stage: str, data: list[dict], tmp_path: Path) -> None:
    """Run a real writer process, wait until it reaches `stage`, then SIGKILL it."""
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(data))
    env = {**os.environ, PAUSE_ENV: f"{stage}:60", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "storage.lake", str(root), "evaluations", "1", str(path), "crash-test"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"paused at {stage}" in line, line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("stage", ["staged", "moved", "committed"])
def test_sigkill_mid_write_leaves_old_or_new_and_next_write_succeeds(tmp_path, stage):
    root = tmp_path / "lake"
    lake = Lake(root)
    old, new = rows(1, [0.1, 0.2]), rows(1, [0.5, 0.6, 0.7])
    old_digest = lake.write_partition("evaluations", 1, old, producer="t").digest

    kill_writer_at(root, stage, new, tmp_path)

    # up to the manifest swap readers see the old state; after it, Lake.read sees the new one
    # and the catalog (not rebuilt yet) still shows the old, complete file set
    seen = Lake(root, catalog=False).read("evaluations")
    assert seen.num_rows == (3 if stage == "committed" else 2)
    assert query(lake, "SELECT count(*) AS n FROM evaluations").column("n").to_pylist() == [2]
    if stage != "committed":
        assert lake.digest("evaluations", 1) == old_digest

    # the crashed writer's lock is not stuck; the next writer cleans up and commits
    info = lake.write_partition("evaluations", 1, rows(1, [0.9]), producer="t")
    assert lake.read("evaluations").column("value").to_pylist() == [0.9]
    assert query(lake, "SELECT value FROM evaluations").column("value").to_pylist() == [0.9]
    assert not list((root / "_staging").iterdir())
    live = {Path(p.uri) for p in lake.partitions("evaluations")}
    retired = {root / "evaluations" / r["path"] for r in lake.manifest("evaluations")["retired"]}
    on_disk = set((root / "evaluations").rglob("*.parquet"))
    assert live == {Path(info.uri)} and on_disk <= live | retired  # no orphan of the killed write
    assert catalog_is_current(lake)


def test_a_killed_writer_after_its_manifest_swap_is_caught_up_on_the_next_writer_entry(tmp_path):
    root = tmp_path / "lake"
    lake = Lake(root)
    lake.write_partition("evaluations", 1, rows(1, [0.1]), producer="t")
    kill_writer_at(root, "committed", rows(1, [0.5, 0.6]), tmp_path)
    assert not catalog_is_current(lake)
    with lake.writer(owner="recovery"):
        pass
    assert catalog_is_current(lake)
    assert query(lake, "SELECT count(*) AS n FROM evaluations").column("n").to_pylist() == [2]


def test_concurrent_readers_see_whole_versions_only(tmp_path):
    lake = Lake(tmp_path)
    versions = {2: rows(1, [0.1, 0.2]), 5: rows(1, [0.3, 0.4, 0.5, 0.6, 0.7])}
    lake.write_partition("evaluations", 1, versions[2], producer="t")
    done = threading.Event()

    def write() -> None:
        try:
            for i in range(12):
                lake.write_partition("evaluations", 1, versions[5 if i % 2 == 0 else 2], producer="t")
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    reader, counts = Lake(tmp_path, catalog=False), []
    con = connect_readonly(lake)  # held open across every rebuild: never a lock error
    while not done.is_set():
        counts.append(reader.read("evaluations").num_rows)
        counts.append(query(lake, "SELECT count(*) AS n FROM evaluations").column("n")[0].as_py())
        counts.append(con.sql("SELECT count(*) FROM evaluations").fetchall()[0][0])
    writer.join()
    con.close()
    assert set(counts) == {2, 5}  # both versions seen, nothing in between
