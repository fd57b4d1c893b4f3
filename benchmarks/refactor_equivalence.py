"""Does a refactor change what the pipeline writes? A smoke train and one round, per code tree.

Runs `illume train --budget smoke` and two self-enhancement rounds on a fresh lake with each code
tree, one after the other: the fault matrix's round (the model assessing itself in text,
strategies `assessment` + `accepted_t2i`), then a round assessed by likelihood with the
`balanced_t2i` and `preference` strategies. Then it compares every
partition of every table: rows and content digest, leaving out the columns that record when
something ran (`storage/lake.py`'s `VOLATILE`), and the current checkpoint's id.
Not covered: `--vision-from`, the judge as assessor, and the CLI's model and world commands.

    # the working tree against the last commit
    .venv/bin/python benchmarks/refactor_equivalence.py --before HEAD
    # two revisions
    .venv/bin/python benchmarks/refactor_equivalence.py --before b601325 --after HEAD

A revision is exported with `git archive` into the work folder; `--after` defaults to this
checkout's working tree. Both trees run in this checkout's virtual environment (same
dependencies). Prints one line per difference and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fault_matrix import BIN, ROOT, base_env, compare, lake_state, round1_current, round_cmd  # noqa: E402

# the second round: the other assessor and strategies
LIKELIHOOD_ROUND = {"assessor": "likelihood", "strategies": ["balanced_t2i", "preference"]}


def export(rev: str, dest: Path) -> Path:
    """The tree of `rev` in `dest` (a fresh folder)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    tar = dest.with_suffix(".tar")
    subprocess.run(["git", "archive", "--format=tar", "-o", str(tar), rev], cwd=ROOT, check=True)
    with tarfile.open(tar) as t:
        t.extractall(dest, filter="data")
    tar.unlink()
    return dest


def run_tree(tree: Path, work: Path, name: str) -> Path:
    """Train a smoke base and run one round with `tree`'s code on a fresh lake; the lake."""
    lake = work / f"lake-{name}"
    shutil.rmtree(lake, ignore_errors=True)
    env = {**base_env(work, work / f"prefect-home-{name}"), "PYTHONPATH": str(tree)}
    for what, cmd in (
        ("train", [str(BIN / "illume"), "train", "--budget", "smoke", "--lake", str(lake)]),
        ("round", round_cmd(lake)),
        ("round-likelihood", round_cmd(lake, LIKELIHOOD_ROUND)),
    ):
        t0 = time.monotonic()
        log = work / f"{name}-{what}.log"
        with open(log, "w") as out:
            rc = subprocess.run(cmd, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
        print(f"{name}: {what} rc {rc} in {time.monotonic() - t0:.0f} s ({log})", flush=True)
        if rc != 0:
            raise SystemExit(f"{name}: {what} failed; see {log}")
    return lake


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="a git revision")
    ap.add_argument("--after", default=None, help="a git revision (default: the working tree)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/illume-refactor-equivalence"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    before = export(args.before, args.work / "tree-before")
    after = export(args.after, args.work / "tree-after") if args.after else ROOT
    lakes = {name: run_tree(tree, args.work, name) for name, tree in (("before", before), ("after", after))}
    ref = lake_state(lakes["before"])
    n, rows, diffs = compare(ref, lakes["after"])
    currents = {name: round1_current(lake) for name, lake in lakes.items()}
    if currents["before"] != currents["after"]:
        diffs.append(f"current checkpoint: {currents['before']} before, {currents['after']} after")
    print(
        json.dumps({"partitions": n, "rows": rows, "current": currents["after"], "differences": len(diffs)})
    )
    for d in diffs:
        print("  " + d)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
