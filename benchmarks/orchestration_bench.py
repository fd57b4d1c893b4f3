"""Orchestration overhead of a self-enhancement round: wall time vs the compute inside it.

Trains a base model on the `smoke` budget (model quality does not matter here: the work per
sample is the same), then runs one round at N samples (prompts x images per prompt) and reads the
lake's `task_runs` table: per task, the wall time and the compute seconds its actors (or its own
process) reported. Prints the round's wall time over the summed compute, and the fixed start-up
cost (Prefect API + Ray + worker pool before the first sample). With --fresh-process it also
times what a user waits for from a new shell: `illume round` started as a new process (imports,
the temporary Prefect API, the lake lock, a local Ray) until its first task starts.

    .venv/bin/python benchmarks/orchestration_bench.py --samples 1024 --workers 2
    .venv/bin/python benchmarks/orchestration_bench.py --samples 8 --fresh-process 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--samples", type=int, default=1024, help="samples in the round (prompts x images per prompt)"
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--lake", default=None, help="reuse a lake that already has a base model")
    ap.add_argument(
        "--fresh-process", type=int, default=0, metavar="N", help="also time N new `illume round` processes"
    )
    args = ap.parse_args()

    t_import = time.perf_counter()
    from flows.pipeline import self_enhancement_round, train_pipeline
    from illume_core.settings import RoundConfig
    from storage.registry import get_lake

    lake = args.lake or os.path.join(tempfile.mkdtemp(prefix="illume-orch-"), "lake")
    t0 = time.perf_counter()
    if not os.path.exists(os.path.join(lake, "checkpoints", "current")):
        train_pipeline(lake=lake, budget="smoke", workers=args.workers)
    t_train = time.perf_counter() - t0

    # the smoke corpus has few distinct prompts: take them all and enough images of each
    from illume_core.train.data import BaseCorpus
    from tasks.plumbing import load_settings

    s = load_settings(lake)
    n_prompts = len(BaseCorpus(s.cfg, s.corpus).prompts)
    per_prompt = -(-args.samples // n_prompts)
    t1 = time.perf_counter()
    out = self_enhancement_round(
        lake=lake,
        config=RoundConfig(n_prompts=n_prompts * 10, images_per_prompt=per_prompt),
        workers=args.workers,
        lock_timeout_s=30,
    )
    wall = time.perf_counter() - t1
    r = out["round"]
    runs = [x for x in get_lake(lake).read("task_runs", r).to_pylist()]
    samples = get_lake(lake).read("samples", r, "self").num_rows

    print(f"lake: {lake}")
    print(
        f"samples in the round: {samples}; workers: {args.workers}; imports {t0 - t_import:.1f} s; base training {t_train:.1f} s"
    )
    print(f"{'task':<28}{'wall s':>10}{'compute s':>12}{'wall/compute':>14}")
    tot_wall = tot_compute = 0.0
    for x in sorted(runs, key=lambda x: x["started_at"]):
        w = (x["ended_at"] - x["started_at"]).total_seconds()
        c = x["compute_seconds"]
        tot_wall += w
        tot_compute += c
        ratio = f"{w / c:.2f}" if c > 0 else "-"
        print(f"{x['task'] + ' (' + str(x['rows']) + ' rows)':<28}{w:>10.1f}{c:>12.1f}{ratio:>14}")
    first = min(x["started_at"] for x in runs)
    last = max(x["ended_at"] for x in runs)
    in_tasks = (last - first).total_seconds()
    print(
        f"round wall time (flow call): {wall:.1f} s; from first task start to last task end: {in_tasks:.1f} s"
    )
    print(f"summed task compute: {tot_compute:.1f} s; summed task wall: {tot_wall:.1f} s")
    print(
        f"wall / summed compute: {wall / max(tot_compute, 1e-9):.3f}  (goal <= 1.10; parallel workers can push it below 1)"
    )
    print(
        f"fixed start-up (flow call to first task start, Prefect API + lock + Ray): {wall - in_tasks:.1f} s (goal <= 15 s)"
    )
    for k in range(args.fresh_process):
        print(
            f"fresh process {k + 1}: process start to first task start {fresh_start_up(lake, args.workers):.1f} s"
        )


def fresh_start_up(lake: str, workers: int) -> float:
    """Seconds from starting `illume round` (one prompt, one image) to its first task's start."""
    from storage.registry import get_lake

    illume = str(Path(sys.executable).parent / "illume")
    t0 = datetime.now(UTC)
    cmd = [
        illume,
        "round",
        "--lake",
        lake,
        "--n-prompts",
        "1",
        "--images-per-prompt",
        "1",
        "--workers",
        str(workers),
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = get_lake(lake).read("task_runs").to_pylist()
    first = min(x["started_at"] for x in runs if x["started_at"] >= t0)
    return (first - t0).total_seconds()


if __name__ == "__main__":
    main()
