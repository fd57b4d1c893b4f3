"""Where a fresh `illume round` on the embedded default spends its time before the first task.

Each figure is taken in a fresh Python process (nothing cached in memory; the OS file cache is
warm after the first repeat, as on any machine that ran illume before):

- `import flows.cli`: what `illume --help` pays;
- `import flows.pipeline`: prefect, pydantic and illume_core's modules a flow needs;
- `import tasks.pool`: Ray (and what it pulls in);
- the temporary Prefect API until it answers, started as Prefect starts it
  (`SubprocessASGIServer().start()`, which imports Prefect's server application in the calling
  process first) and as the commands start it (`flows.temp_api`: the same subprocess, started
  before anything of Prefect is imported);
- `ray.init` of a local instance (`tasks.cluster.ensure_ray`);
- the API and Ray one after the other, then overlapped as `illume round` does
  (`flows.commands_pipeline.warm_up`: the API's subprocess starts first, then Ray and the flow's
  imports, and the API is waited for last);
- with `--lake DIR` (a lake with a base model, e.g. one `illume train --budget smoke` made):
  a fresh `illume round` process until its first task has committed (`prompts/round=N/part=self`
  appears), with the overlap and without it (`ILLUME_NO_WARM_UP=1`). The round is killed there;
  the lake is a throw-away copy.

    .venv/bin/python benchmarks/startup.py [--repeats 3] [--lake /path/to/smoke/lake]

Prints one JSON object per measurement and a table of medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
sys.path.insert(0, str(ROOT / "benchmarks"))
import fault_matrix as fm  # noqa: E402  (its process helpers)

PHASES = {
    "import flows.cli": "import flows.cli",
    "import flows.pipeline": "import flows.pipeline",
    "import tasks.pool (ray)": "import tasks.pool",
    # Prefect's own start: the parent imports Prefect's server application, then starts it
    "temporary Prefect API (Prefect's SubprocessASGIServer)": (
        "{t0}; from prefect.server.api.server import SubprocessASGIServer; SubprocessASGIServer().start()"
    ),
    # the commands' start (flows/temp_api.py): the same subprocess, nothing of Prefect imported here
    "temporary Prefect API (flows.temp_api)": (
        "from flows.temp_api import start_temporary_api; {t0}; start_temporary_api().wait()"
    ),
    "ray.init (local)": "from tasks.cluster import ensure_ray; {t0}; ensure_ray()",
    "API then Ray": (
        "from flows.temp_api import start_temporary_api; from tasks.cluster import ensure_ray; "
        "{t0}; start_temporary_api().wait(); ensure_ray()"
    ),
    "API, Ray and imports overlapped (warm_up)": (
        "from flows.commands_pipeline import warm_up; {t0}; warm_up()"
    ),
}


def env(home: Path) -> dict[str, str]:
    return {**fm.base_env(home.parent, home), "PYTHONPATH": str(ROOT)}


def phase(name: str, code: str, home: Path) -> float:
    """Seconds for `code` in a fresh process (from {t0}, else from the first statement)."""
    t0 = "import time as _t; _t0 = _t.perf_counter()"
    body = code.format(t0=t0) if "{t0}" in code else f"{t0}; {code}"
    script = f"{body}; print('SECONDS', _t.perf_counter() - _t0, flush=True); import os; os._exit(0)"
    # not subprocess.run(capture_output=True): the API server and Ray outlive the child and hold
    # its stdout open, so reading to the end would wait for them. fault_matrix.Proc reads line by
    # line, remembers the child's descendants while it runs, and kills every one on stop.
    with tempfile.TemporaryDirectory(prefix="illume-startup-") as work:
        p = fm.Proc([PY, "-c", script], env(home), Path(work) / "phase.log")
        try:
            p.wait_for(p.saw("SECONDS"), timeout_s=600)
        finally:
            p.stop()  # waits for the reader, so a line printed just before the child's exit is in
    lines = [ln for ln in p.lines if ln.startswith("SECONDS")]
    if not lines:
        raise RuntimeError(f"{name}: {''.join(p.lines)[-2000:]}")
    return float(lines[-1].split()[1])


def first_task(lake: Path, home: Path, warm: bool) -> float:
    """Seconds from starting `illume round` until its first task's partition is committed."""
    work = Path(tempfile.mkdtemp(prefix="illume-startup-"))
    try:
        copy = work / "lake"
        shutil.copytree(lake, copy)
        rounds = json.loads(
            subprocess.run(
                [PY, "-c", f"from storage.lake import Lake; import json; print(json.dumps(Lake({str(copy)!r}, catalog=False).read('rounds').column('round').to_pylist()))"],
                env=env(home), cwd=ROOT, capture_output=True, text=True, check=True,
            ).stdout
        )  # fmt: skip
        target = copy / "prompts" / f"round={max(rounds) + 1}" / "part=self"
        e = env(home)
        if not warm:
            e["ILLUME_NO_WARM_UP"] = "1"
        t0 = time.perf_counter()
        # fault_matrix.Proc remembers the round's descendants (Ray's processes leave its
        # process group) and kills them all on stop
        p = fm.Proc(
            [
                PY,
                "-m",
                "flows.cli",
                "round",
                "--lake",
                str(copy),
                "--n-prompts",
                "4",
                "--images-per-prompt",
                "2",
            ],
            e,
            work / "round.log",
        )
        try:
            while not (target.is_dir() and any(target.iterdir())):
                if p.p.poll() is not None:
                    raise RuntimeError(
                        f"illume round ended (exit {p.p.returncode}) before its first task: {p.text[-2000:]}"
                    )
                time.sleep(0.05)
            return time.perf_counter() - t0
        finally:
            p.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--lake", type=Path, help="a lake with a base model: also time `illume round` to its first task"
    )
    ap.add_argument("--only", nargs="*", help="phases to run (default: all)")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="illume-startup-home-"))
    results: dict[str, list[float]] = {}
    try:
        for _ in range(args.repeats):
            for name, code in PHASES.items():
                if args.only and name not in args.only:
                    continue
                s = phase(name, code, home)
                results.setdefault(name, []).append(s)
                print(json.dumps({"phase": name, "seconds": round(s, 2)}), flush=True)
            if args.lake:
                for warm in (False, True):
                    name = (
                        f"illume round to its first task ({'overlapped' if warm else 'one after the other'})"
                    )
                    s = first_task(args.lake, home, warm)
                    results.setdefault(name, []).append(s)
                    print(json.dumps({"phase": name, "seconds": round(s, 2)}), flush=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print("\n| phase | median s | runs |\n|---|---|---|")
    for name, xs in results.items():
        print(f"| {name} | {statistics.median(xs):.1f} | {', '.join(f'{x:.1f}' for x in xs)} |")
    print(
        f"\nload average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
