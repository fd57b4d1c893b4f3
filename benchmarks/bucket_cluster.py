"""A bucket lake on a two-node Ray cluster that shares nothing but the bucket (issue 18).

    .venv/bin/python benchmarks/bucket_cluster.py [--work /tmp/illume-bucket-cluster] [--timeout-s 1800]

Starts moto's S3 server on loopback (`moto_server`, from the dev extras) with one bucket, a Ray
head (1 CPU) and a worker node (2 CPUs), each from its own working folder with its own node cache
(`ILLUME_NODE_CACHE`) and none of the S3 settings in its environment (the flow's actors get them
through their runtime_env). The driver, in a third folder with a third cache, runs
`illume train --budget smoke`, one round, then `illume calibrate`, `illume eval`, `illume eval
--prompts` (a two-line GenEval-format file) and `illume rerun --task judge` on
`s3://<bucket>/lake` against the cluster. Then the same commands run in one process on a local
lake, and the two lakes are compared partition by partition (rows and digests, clocks left out:
storage.lake.lake_state).

Prints: the wall time of each run, which actors ran on the worker node, which checkpoints each
node's cache downloaded from the bucket, and the comparison. One machine hosts all the
"nodes" here, so the machines are not really apart; what the run shows is that the lake,
checkpoints, task results and cache records go through the bucket (the trainer's progress report
is the one file written where the driver polls it; a real second machine skips it).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fault_matrix import (  # noqa: E402
    BIN,
    PY,
    ROUND,
    Proc,
    _parents,
    base_env,
    cmdline,
    descendants,
    free_port,
    kill,
    round_cmd,
    started_at,
)

NODES = {"driver": "driver (the flow's process)", "head": "head node", "node": "worker node"}


def _no_s3(env: dict) -> dict:
    return {k: v for k, v in env.items() if not k.startswith("AWS_")}


def _wait_http(url: str, timeout_s: float) -> bool:
    end = time.time() + timeout_s
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            time.sleep(0.5)
    return False


def _cached(cache: Path) -> list[str]:
    d = cache / "checkpoints"
    return sorted(p.name for p in d.iterdir() if (p / "manifest.json").is_file()) if d.is_dir() else []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/illume-bucket-cluster"))
    ap.add_argument("--timeout-s", type=float, default=1800)
    args = ap.parse_args()
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    for d in ("driver", "head", "node", "reference", "logs"):
        (work / d).mkdir(parents=True)
    n = iter(range(1, 100))

    def log(tag: str) -> Path:
        return work / "logs" / f"{next(n):02d}-{tag}.log"

    env = _no_s3(base_env(work))
    procs: list[Proc] = []
    port_s3, port_ray = free_port(), free_port()
    bucket = f"illume-{uuid.uuid4().hex[:10]}"
    lake = f"s3://{bucket}/lake"
    s3 = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port_s3}",
        "AWS_ACCESS_KEY_ID": "illume-bench",
        "AWS_SECRET_ACCESS_KEY": "illume-bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        procs.append(
            Proc([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port_s3)], env, log("moto"))
        )
        if not _wait_http(f"http://127.0.0.1:{port_s3}/", 60):
            print("moto_server did not answer within 60 s")
            return 1
        import boto3

        boto3.client(
            "s3",
            endpoint_url=s3["AWS_ENDPOINT_URL"],
            aws_access_key_id="illume-bench",
            aws_secret_access_key="illume-bench",
            region_name="us-east-1",
        ).create_bucket(Bucket=bucket)

        def start_node(name: str, flags: list[str], extra_env: dict) -> bool:
            """`ray start FLAGS` from the node's own folder with its own node cache (no S3 settings)."""
            node_env = {**env, **extra_env, "ILLUME_NODE_CACHE": str(work / name / "cache")}
            cmd = [str(BIN / "ray"), "start", *flags, "--disable-usage-stats"]
            p = Proc(cmd, node_env, log(f"ray-{name}"), cwd=work / name, daemons=True)
            procs.append(p)
            if p.wait(180) != 0:
                print(f"ray start ({name}) failed:", p.text[-500:])
                return False
            return True

        head_flags = [f"--port={port_ray}", "--num-cpus=1", "--include-dashboard=false"]
        if not start_node("head", ["--head", *head_flags, f"--temp-dir={work / 'ray-tmp'}"], {}):
            return 1
        before = {p for p in _parents() if "raylet/raylet" in cmdline(p)}
        node_flags = [f"--address=127.0.0.1:{port_ray}", "--num-cpus=2"]
        if not start_node("node", node_flags, {"RAY_AUTH_MODE": "token"}):
            return 1
        second = {p for p in _parents() if "raylet/raylet" in cmdline(p)} - before

        driver_env = {
            **env,
            **s3,
            "RAY_AUTH_MODE": "token",
            "RAY_ADDRESS": f"127.0.0.1:{port_ray}",
            "ILLUME_NODE_CACHE": str(work / "driver" / "cache"),
            "ILLUME_CATALOG_CACHE": str(work / "driver" / "catalogs"),
            "ILLUME_PLACE_TIMEOUT_S": "60",
        }
        on_node: set[str] = set()

        def watch(p: Proc):
            def check() -> bool:
                for r in second:
                    on_node.update(
                        m.group(0) for q in descendants(r) if (m := re.search(r"ray::\w+", cmdline(q)))
                    )
                return p.p.poll() is not None

            return check

        times: dict[str, float] = {}

        geneval = work / "geneval_prompts.jsonl"  # a small GenEval-format prompt file for `eval --prompts`
        geneval.write_text(
            '{"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "red"}], '
            '"prompt": "a photo of a red circle"}\n'
            '{"tag": "counting", "include": [{"class": "square", "count": 2}], "prompt": "a photo of two squares"}\n'
        )

        def train_and_round(where: str, root: str, run_env: dict, folder: Path, watch_node: bool) -> bool:
            """`illume train --budget smoke`, one round, then every other command that writes the lake
            (calibrate, eval, eval --prompts, rerun) on `root`; False (said why) if one fails."""
            illume = str(BIN / "illume")
            for name, cmd in (
                ("train", [illume, "train", "--budget", "smoke", "--lake", root, "--workers", "2"]),
                ("round", round_cmd(root)),
                ("calibrate", [illume, "calibrate", "--lake", root, "--workers", "2"]),
                ("eval", [illume, "eval", "--lake", root, "--workers", "2"]),
                (
                    "eval --prompts",
                    [
                        illume,
                        "eval",
                        "--lake",
                        root,
                        "--prompts",
                        str(geneval),
                        "--images-per-prompt",
                        "2",
                        "--outdir",
                        str(folder / "geneval-out"),
                        "--workers",
                        "2",
                    ],
                ),  # fmt: skip
                (
                    "rerun",
                    [illume, "rerun", "--round", "1", "--task", "judge", "--lake", root, "--workers", "2"],
                ),
            ):
                t0 = time.perf_counter()
                p = Proc(cmd, run_env, log(f"{where}-{name}"), cwd=folder)
                procs.append(p)
                if watch_node:
                    p.wait_for(watch(p), args.timeout_s, every=0.5)
                rc = p.wait(30 if watch_node else args.timeout_s)
                times[f"{where} {name}"] = time.perf_counter() - t0
                if rc != 0:
                    print(f"{name} on the {where} lake exited {rc}:\n" + p.text[-2000:])
                    return False
            return True

        if not train_and_round("cluster", lake, driver_env, work / "driver", True):
            return 1
        caches = {label: _cached(work / d / "cache") for d, label in NODES.items()}
        # the reference: the same work in one process on a local lake, no cluster, no bucket
        ref_lake = work / "reference" / "lake"
        ref_env = {**env, "ILLUME_NODE_CACHE": str(work / "reference" / "cache")}
        if not train_and_round("local", str(ref_lake), ref_env, work / "reference", False):
            return 1

        import os

        os.environ.update(s3)
        from storage.lake import lake_state

        got, ref = lake_state(lake), lake_state(str(ref_lake))
        same = [k for k in ref if got.get(k) == ref[k]]
        differ = sorted(set(ref) ^ set(got) | {k for k in ref if k in got and got[k] != ref[k]})
        print(f"commit: {_git_head()}  bucket lake: {lake}  ({PY})")
        print("| run | wall time |")
        print("|---|---|")
        for k, v in times.items():
            print(f"| {k} | {v:.0f} s |")
        print(f"\nactors on the worker node: {', '.join(sorted(on_node)) or 'none'}")
        for d, cks in caches.items():
            print(
                f"{d} node cache: {len(cks)} checkpoint(s) downloaded from the bucket: {', '.join(cks) or '-'}"
            )
        print(
            f"\nlake comparison: {len(same)} of {len(ref)} partitions equal (rows and digests), "
            f"{sum(r for r, _ in ref.values())} rows; differing: {', '.join(differ) or 'none'}"
        )
        print("ROUND params:", json.dumps(ROUND))
        return 0 if not differ else 1
    finally:
        for p in procs:
            p.stop()
        kill({q: started_at(q) for q in _parents() if str(work / "ray-tmp") in cmdline(q)})
        kill({q: started_at(q) for q in _parents() if f":{port_ray}" in cmdline(q)})


def _git_head() -> str:
    import subprocess

    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
