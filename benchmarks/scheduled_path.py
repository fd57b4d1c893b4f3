"""The scheduled path, end to end on loopback, as an operator runs it (docs/OPERATIONS.md).

    .venv/bin/python benchmarks/scheduled_path.py

Starts `prefect server` with a fresh PREFECT_HOME, creates the `illume-local` process pool,
deploys prefect.yaml with `prefect deploy --all`, starts a worker, then through the deployments:
trains a smoke-budget base model into a temporary lake, runs one round, and re-runs that
round's `assess` with `--param rerun='["assess"]'`. Checks that assess re-ran, sample did not,
and no table gained or lost a row; prints the timings and exits 1 if a check fails. Every
process it starts is stopped on the way out (signals with bounded waits, then SIGKILL).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's prefect beside its python
sys.path.insert(0, str(ROOT / "benchmarks"))
import fault_matrix as fm  # noqa: E402  (its environment and port helpers)

UUID_RE = re.compile(r"UUID:\s*([0-9a-f-]{36})")
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class PathError(RuntimeError):
    """A step of the scheduled path failed; the message says which and where its log is."""


class Processes:
    """Background processes (each its own session) stopped in reverse order with bounded waits."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.extra_pids: list[int] = []  # flow-run processes the worker started (own sessions)

    def start(self, name: str, cmd: list[str], env: dict, cwd: Path, log: Path) -> subprocess.Popen:
        f = log.open("w")
        p = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append((name, p))
        return p

    @staticmethod
    def _stop_group(pgid: int, wait: Callable[[float], bool]) -> None:
        # SIGINT first: `prefect worker start` shuts down cleanly on it, not on SIGTERM
        for sig, grace in ((signal.SIGINT, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            if wait(grace):
                return

    def stop_all(self) -> None:
        for pid in self.extra_pids:
            self._stop_group(pid, lambda t, pid=pid: _wait_gone(pid, t))
        for _, p in reversed(self.procs):

            def waited(t: float, p: subprocess.Popen = p) -> bool:
                try:
                    p.wait(timeout=t)
                    return True
                except subprocess.TimeoutExpired:
                    return False

            if p.poll() is None:
                self._stop_group(p.pid, waited)


def _wait_gone(pid: int, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def run(cmd: list[str], env: dict, timeout_s: float, what: str) -> str:
    """Run a command to completion (bounded); its output, or a PathError with its tail."""
    try:
        out = subprocess.run(
            cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise PathError(f"{what}: no answer in {timeout_s:.0f} s ({' '.join(cmd)})") from e
    text = out.stdout + out.stderr
    if out.returncode != 0:
        raise PathError(f"{what} failed (exit {out.returncode}):\n{text[-3000:]}")
    return text


def wait_healthy(api: str, server: subprocess.Popen, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if server.poll() is not None:
            raise PathError(f"prefect server exited with {server.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise PathError(f"prefect server not healthy after {timeout_s:.0f} s at {api}")


def trigger(deployment: str, params: dict, env: dict) -> str:
    """`prefect deployment run NAME --param k=v ...` as an operator types it; the flow run id."""
    cmd = [str(BIN / "prefect"), "deployment", "run", deployment]
    for k, v in params.items():
        cmd += ["--param", f"{k}={json.dumps(v)}"]
    out = run(cmd, env, 60, f"prefect deployment run {deployment}")
    m = UUID_RE.search(out)
    if not m:
        raise PathError(f"no flow run id in the output of `prefect deployment run`:\n{out[-2000:]}")
    return m.group(1)


def wait_flow_run(client, run_id: str, timeout_s: float, procs: Processes, worker_log: Path) -> str:
    """Poll the server until the run is terminal; its state type (COMPLETED, FAILED, ...)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        fr = client.read_flow_run(run_id)
        pid = (fr.infrastructure_pid or "").rsplit(":", 1)[-1]
        if pid.isdigit() and int(pid) not in procs.extra_pids:
            procs.extra_pids.append(int(pid))
        if fr.state is not None and fr.state.type.value in TERMINAL:
            # forget a finished run's process once it is gone, so no recycled pid is signalled
            for p in list(procs.extra_pids):
                if _wait_gone(p, 30.0):
                    procs.extra_pids.remove(p)
            return fr.state.type.value
        time.sleep(1.0)
    raise PathError(f"flow run {run_id} not finished after {timeout_s:.0f} s; see {worker_log}")


def snapshot(lake: str) -> dict:
    """Row counts per table, and each task_runs partition's (ended_at, flow_run_id)."""
    from storage.lake import Lake
    from storage.schemas import TABLES

    lk = Lake(lake, catalog=False)
    counts = {t: lk.read(t).num_rows for t in TABLES}
    runs = {}
    for p in lk.partitions("task_runs"):
        row = lk.read("task_runs", p.round, p.part).to_pylist()[0]
        runs[(p.round, p.part)] = (row["task"], row["ended_at"], row["flow_run_id"])
    digests = {(p.table, p.round, p.part): p.digest for t in TABLES for p in lk.partitions(t)}
    return {"counts": counts, "runs": runs, "digests": digests}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-prompts", type=int, default=4)
    ap.add_argument("--images-per-prompt", type=int, default=2)
    ap.add_argument("--finetune-steps", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1, help="Ray model workers per flow run")
    ap.add_argument("--run-timeout-s", type=float, default=600, help="limit per flow run")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, lake)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="illume-scheduled-"))
    lake = str(tmp / "lake")
    port = fm.free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **fm.base_env(tmp),  # without RAY_ADDRESS: a local Ray per flow run, never someone's cluster
        "PREFECT_API_URL": api,
        "ILLUME_ROOT": str(ROOT),  # the pull step's working directory (prefect.yaml)
    }
    os.environ.update({k: env[k] for k in ("PREFECT_HOME", "PREFECT_API_URL")})
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    procs = Processes()
    times: dict[str, float] = {}
    failures: list[str] = []
    prefect = str(BIN / "prefect")
    round_params = {
        "lake": lake,
        "n_prompts": args.n_prompts,
        "images_per_prompt": args.images_per_prompt,
        "finetune_steps": args.finetune_steps,
        "workers": args.workers,
    }

    def timed(name: str, fn: Callable[[], object]) -> object:
        t0 = time.monotonic()
        out = fn()
        times[name] = time.monotonic() - t0
        print(f"  {name:<34} {times[name]:7.1f} s", flush=True)
        return out

    print(f"scheduled path: repo {ROOT}, temp {tmp}, api {api}")
    try:
        server_log = tmp / "server.log"
        server = procs.start(
            "server",
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env,
            ROOT,
            server_log,
        )
        timed("server start -> healthy", lambda: wait_healthy(api, server, 90))
        timed(
            "work-pool create illume-local",
            lambda: run(
                [prefect, "work-pool", "create", "illume-local", "--type", "process"],
                env,
                60,
                "work-pool create",
            ),
        )
        timed("deploy --all", lambda: run([prefect, "--no-prompt", "deploy", "--all"], env, 180, "deploy"))

        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            deps = {d.name: d for d in client.read_deployments()}
            print(f"  deployments: {sorted(deps)}")
            for need in ("nightly-round", "weekly-eval", "train"):
                if need not in deps:
                    failures.append(f"deployment {need} missing after deploy --all")
            nightly = deps.get("nightly-round")
            if nightly is not None:
                crons = [(s.schedule.cron, s.schedule.timezone) for s in nightly.schedules]
                limit = nightly.global_concurrency_limit.limit if nightly.global_concurrency_limit else None
                print(f"  nightly-round: schedules {crons}, concurrency limit {limit}")
                if limit != 1:
                    failures.append(f"nightly-round concurrency limit is {limit}, expected 1")

            # the worker starts in an empty folder: only the pull step can bring it to the repo
            worker_log = tmp / "worker.log"
            worker_cwd = tmp / "worker-cwd"
            worker_cwd.mkdir()
            procs.start(
                "worker",
                [prefect, "worker", "start", "--pool", "illume-local"],
                env,
                worker_cwd,
                worker_log,
            )

            def flow_run(name: str, deployment: str, params: dict) -> str:
                run_id = trigger(deployment, params, env)
                state = wait_flow_run(client, run_id, args.run_timeout_s, procs, worker_log)
                if state != "COMPLETED":
                    tail = worker_log.read_text()[-4000:]
                    raise PathError(f"{name} ({run_id}) ended {state}; worker log tail:\n{tail}")
                return run_id

            timed(
                "train (smoke) via train deployment",
                lambda: flow_run(
                    "train",
                    "train-pipeline/train",
                    {"lake": lake, "budget": "smoke", "workers": args.workers},
                ),
            )
            timed(
                "round via nightly-round",
                lambda: flow_run("round", "self-enhancement-round/nightly-round", round_params),
            )
            from storage.lake import Lake

            rounds = Lake(lake, catalog=False).read("rounds").to_pylist()
            r = max(x["round"] for x in rounds)
            before = snapshot(lake)
            timed(
                f"rerun assess of round {r}",
                lambda: flow_run(
                    "rerun",
                    "self-enhancement-round/nightly-round",
                    {**round_params, "round": r, "rerun": ["assess"]},
                ),
            )
            after = snapshot(lake)

            def two_evals() -> list:
                eval_params = {"lake": lake, "workers": args.workers}
                ids = [trigger("evaluate-checkpoint/weekly-eval", eval_params, env) for _ in range(2)]
                for i in ids:
                    state = wait_flow_run(client, i, args.run_timeout_s, procs, worker_log)
                    if state != "COMPLETED":
                        raise PathError(f"weekly-eval run {i} ended {state}; see {worker_log}")
                return [client.read_flow_run(i) for i in ids]

            evals = timed("2 weekly-eval runs at once", two_evals)
            failures += check_one_at_a_time(client, evals)
            scheduled = client.read_flow_runs()
            upcoming = sorted(
                (fr.expected_start_time, fr.name)
                for fr in scheduled
                if fr.state is not None and fr.state.type.value == "SCHEDULED"
            )

        failures += compare(before, after, r)
        if upcoming:
            print(f"  scheduled runs the server created: {len(upcoming)}, next at {upcoming[0][0]}")
    except PathError as e:
        failures.append(str(e))
    finally:
        t0 = time.monotonic()
        procs.stop_all()
        print(f"  {'stop worker + server':<34} {time.monotonic() - t0:7.1f} s")
        if args.keep or failures:
            print(f"logs and lake kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    total = sum(times.values())
    print(f"  {'total (phases above)':<34} {total:7.1f} s")
    if failures:
        print("FAILED:\n- " + "\n- ".join(failures))
        return 1
    print("OK: assess re-ran, sample did not, every table kept its row count")
    return 0


def check_one_at_a_time(client, runs: list) -> list[str]:
    """Two runs of a deployment with concurrency limit 1 must not overlap; the second waits."""
    (a, b) = sorted(runs, key=lambda fr: fr.start_time)
    waited = [s.name for s in client.read_flow_run_states(b.id) if s.name == "AwaitingConcurrencySlot"]
    gap = (b.start_time - a.end_time).total_seconds()
    print(
        f"  weekly-eval x2: first {a.start_time:%H:%M:%S}-{a.end_time:%H:%M:%S}, second "
        f"{b.start_time:%H:%M:%S}-{b.end_time:%H:%M:%S} (started {gap:.1f} s after the first "
        f"ended; AwaitingConcurrencySlot {len(waited)}x)"
    )
    return [] if gap >= 0 else [f"two weekly-eval runs overlapped by {-gap:.1f} s despite limit 1"]


def compare(before: dict, after: dict, r: int) -> list[str]:
    """Print the task_runs and row-count comparison; the failed checks."""
    failures = []
    print(f"\n  task_runs of round {r} (ended_at before -> after):")
    for key in sorted(k for k in before["runs"] if k[0] == r):
        task, ended0, fr0 = before["runs"][key]
        _, ended1, fr1 = after["runs"].get(key, (task, None, None))
        status = "re-ran" if (ended1, fr1) != (ended0, fr0) else "unchanged"
        print(f"    {key[1]:<40} {status:<9} {ended0:%H:%M:%S.%f} -> {ended1:%H:%M:%S.%f}")
    assess = [k for k in before["runs"] if k[0] == r and k[1].startswith("assess-self")]
    sample = [k for k in before["runs"] if k[0] == r and k[1] == "sample-self"]
    if not assess or not sample:
        failures.append(
            f"round {r} has no assess-self / sample-self task_runs rows: {sorted(before['runs'])}"
        )
    for k in assess:
        if after["runs"][k][1] == before["runs"][k][1]:
            failures.append(f"assess ({k[1]}) did not re-run: ended_at unchanged")
    for k in sample:
        if after["runs"][k] != before["runs"][k]:
            failures.append(f"sample ({k[1]}) re-ran: its task_runs row changed")
    print("\n  rows per table (before -> after):")
    for t, n in before["counts"].items():
        m = after["counts"][t]
        print(f"    {t:<14} {n:6d} -> {m:6d}{'' if n == m else '  CHANGED'}")
        if n != m:
            failures.append(f"table {t} went from {n} to {m} rows")
    changed = sorted(
        f"{k[0]}/round={k[1]}/{k[2]}"
        for k in after["digests"]
        if before["digests"].get(k) != after["digests"][k] and k[0] != "task_runs"
    )
    print(f"\n  partitions whose content changed (task_runs aside): {changed or 'none'}")
    return failures


if __name__ == "__main__":
    sys.exit(main())
