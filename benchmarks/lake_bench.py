"""Lake benchmark: write throughput of evaluations and samples, median latency of the analyst views.

    .venv/bin/python benchmarks/lake_bench.py --eval-rows 1000000 --samples 100000

Writes a fresh lake (10 rounds) of evaluations, samples with real ShapesWorld PNGs (a pool of
rendered scenes, cycled), assessments, judgments and sft examples, then times each analyst view
through a read-only catalog connection. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from illume_core.world.scenes import render, sample_scene
from storage.catalog import ANALYST_VIEWS, connect_readonly
from storage.lake import Lake
from storage.schemas import DIMENSIONS, sample_key

TAGS = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]


def png_pool(n: int) -> list[bytes]:
    rng = random.Random(0)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        render(sample_scene(rng)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def evaluations(round: int, rows: int, rng: np.random.Generator) -> pa.Table:
    # 50 checkpoints x 2 benchmarks x 2 metrics x 2 splits x 6 tags, repeated to reach `rows`
    i = np.arange(rows)
    return pa.table(
        {
            "round": np.full(rows, round),
            "checkpoint_id": pa.array([f"r{round}-c{k}" for k in i % 50]),
            "benchmark": pa.array(np.where(i % 4 == 0, "shapeseval", "other").tolist()),
            "split": pa.array(np.where((i // 6) % 2 == 0, "eval", "heldout").tolist()),
            "tag": pa.array([TAGS[k] for k in i % 6]),
            "metric": pa.array(np.where(i % 8 < 4, "accuracy", "recall").tolist()),
            "value": rng.random(rows),
            "n": rng.integers(10, 500, rows),
        }
    )


def sample_tables(round: int, n: int, pngs: list[bytes], rng: np.random.Generator) -> dict[str, pa.Table]:
    ckpt, idx = f"r{round}-c0", np.arange(n)
    prompts = [f"p{k // 4}" for k in idx]
    sidx = (idx % 4).tolist()
    keys = [sample_key(round, ckpt, p, s) for p, s in zip(prompts, sidx, strict=True)]
    lineage = {
        "round": np.full(n, round),
        "checkpoint_id": pa.array([ckpt] * n),
        "prompt_id": pa.array(prompts),
        "sample_index": pa.array(sidx, pa.int64()),
    }
    tokens = rng.integers(0, 512, (n, 64), dtype=np.int32)
    samples = pa.table(
        {
            **lineage,
            "sample_key": pa.array(keys),
            "seed": pa.array((round * 1_000_003 + idx).tolist(), pa.int64()),
            # a pooled render plus a unique trailing id: real samples are all distinct, and
            # repeated PNGs would let Parquet dictionary-encode them into nothing
            "png": pa.array([pngs[k % len(pngs)] + int(k + round * n).to_bytes(8) for k in idx], pa.binary()),
            "image_tokens": pa.ListArray.from_arrays(
                np.arange(0, 64 * n + 1, 64, dtype=np.int32), tokens.ravel()
            ),
        }
    )
    yes = rng.random((n, 4)) < 0.6
    truth = rng.random((n, 4)) < 0.6
    verdicts = {
        f"{d}_verdict": pa.array(np.where(yes[:, j], "yes", "no").tolist()) for j, d in enumerate(DIMENSIONS)
    }
    assessments = pa.table(
        {
            **lineage,
            "sample_key": pa.array(keys),
            "assessor": pa.array(["self"] * n),
            **verdicts,
            "raw_text": pa.array(["..."] * n),
            "parse_status": pa.array(["ok"] * n),
        }
    )
    details = [
        json.dumps({"dimensions": dict(zip(DIMENSIONS, map(bool, row), strict=True))}) for row in truth
    ]
    judgments = pa.table(
        {
            **lineage,
            "tag": pa.array([TAGS[k % 6] for k in idx]),
            "correct": pa.array(truth.all(axis=1)),
            "reason": pa.array([""] * n),
            "details": pa.array(details),
            "sample_key": pa.array(keys),
            **{f"{d}_ok": pa.array(truth[:, j]) for j, d in enumerate(DIMENSIONS)},
        }
    )
    m = n // 4
    sft = pa.table(
        {
            **{k: v[:m] for k, v in lineage.items()},
            "example_id": pa.array([f"e{round}-{k}" for k in range(m)]),
            "conversation": pa.array(["[]"] * m),
            "image_refs": pa.array([[k] for k in keys[:m]]),
            "strategy": pa.array(["direct"] * m),
            "source_sample": pa.array(keys[:m]),
        }
    )
    return {"samples": samples, "assessments": assessments, "judgments": judgments, "sft_examples": sft}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eval-rows", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--reps", type=int, default=20, help="repetitions per view latency")
    ap.add_argument("--root", type=Path, default=None, help="lake folder (default: a temp folder)")
    ap.add_argument(
        "--legacy-rounds",
        type=int,
        default=0,
        help="write the first K rounds' assessments and judgments without the version-2 columns "
        "(sample_key, <dim>_ok), as an older writer did",
    )
    args = ap.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="illume-lake-bench-"))
    rng = np.random.default_rng(0)
    # the catalog is rebuilt once at the end, so write figures measure the writes alone
    lake = Lake(root, catalog=False)

    pngs = png_pool(256)
    eval_tables = [evaluations(r, args.eval_rows // args.rounds, rng) for r in range(args.rounds)]
    t0 = time.perf_counter()
    infos = [lake.write_partition("evaluations", r, t, producer="bench") for r, t in enumerate(eval_tables)]
    dt = time.perf_counter() - t0
    mb = sum(i.bytes for i in infos) / 1e6
    rows = sum(i.rows for i in infos)
    print(
        f"evaluations: {rows} rows in {dt:.2f} s = {rows / dt:,.0f} rows/s, {mb / dt:.1f} MB/s ({mb:.1f} MB parquet)"
    )

    per_round = [sample_tables(r, args.samples // args.rounds, pngs, rng) for r in range(args.rounds)]
    t0 = time.perf_counter()
    infos = [
        lake.write_partition("samples", r, t["samples"], producer="bench") for r, t in enumerate(per_round)
    ]
    dt = time.perf_counter() - t0
    mb = sum(i.bytes for i in infos) / 1e6
    rows = sum(i.rows for i in infos)
    print(
        f"samples: {rows} rows in {dt:.2f} s = {rows / dt:,.0f} rows/s, {mb / dt:.1f} MB/s ({mb:.1f} MB parquet)"
    )
    legacy = {"sample_key", *(f"{d}_ok" for d in DIMENSIONS)}
    for r, t in enumerate(per_round):
        for name in ("assessments", "judgments", "sft_examples"):
            table = t[name]
            if r < args.legacy_rounds and name != "sft_examples":
                table = table.drop_columns([c for c in table.column_names if c in legacy])
            lake.write_partition(name, r, table, producer="bench")

    from storage.catalog import build_catalog

    t0 = time.perf_counter()
    build_catalog(lake)
    print(f"catalog rebuild, analyst figures computed: {(time.perf_counter() - t0) * 1e3:.0f} ms")
    # a write that changes none of the views' inputs: every stored figure is copied
    t0 = time.perf_counter()
    build_catalog(lake)
    print(f"catalog rebuild, analyst figures copied: {(time.perf_counter() - t0) * 1e3:.0f} ms")
    con = connect_readonly(lake)
    for view in ANALYST_VIEWS:
        times, n = [], 0
        for _ in range(args.reps):
            t0 = time.perf_counter()
            n = con.sql(f"SELECT * FROM {view}").to_arrow_table().num_rows
            times.append(time.perf_counter() - t0)
        print(f"view {view}: median {statistics.median(times) * 1e3:.1f} ms over {args.reps} runs ({n} rows)")
    con.close()
    print(f"lake at {root}")


if __name__ == "__main__":
    main()
