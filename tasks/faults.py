"""Fault injection for the fault matrix: kill this process at a named point, once.

`ILLUME_FAULT_KILL=<point>:<marker file>` makes `fault_point(point)` SIGKILL the calling process
the first time it is reached (the marker file records that it happened, so the re-run that
follows goes through). Points are `start:<task>` and `end:<task>` (task boundaries, raised from
Prefect state hooks); workers use `ILLUME_FAULT_CRASH` (tasks/pool.py) and the lake uses
`ILLUME_LAKE_PAUSE` (storage/lake.py) for kills in the middle of a write.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "ILLUME_FAULT_KILL"


def fault_point(point: str) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    want, _, marker = spec.rpartition(":")  # the point itself holds a colon ("start:sample")
    if want == point and marker and not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(point)
        os.kill(os.getpid(), signal.SIGKILL)


def boundary_hooks(task_name: str) -> dict:
    """Prefect task options that call fault_point at the task's start and end."""

    def on_running(task, run, state) -> None:
        fault_point(f"start:{task_name}")

    def on_completion(task, run, state) -> None:
        fault_point(f"end:{task_name}")

    return {"on_running": [on_running], "on_completion": [on_completion]}
