"""The self-enhancement experiment: does a round of self-assessed data beat equal compute without it?

For each seed: train the base model through all stages (the `experiment` budget), then on copies
of that lake run four arms from the same base checkpoint:
- baseline: the base model as trained (round 0);
- control: stage-3 fine-tuning for the round's number of steps on the base corpus only;
- round: one self-enhancement round (the model samples, assesses itself, reformats, fine-tunes);
- judge round: the same round with the independent judge as the assessor (the ceiling that
  better self-assessment could reach).
Every arm's candidate is evaluated by the same `evaluate` task (ShapesEval seen and held-out
compositions, VQA on held-out scenes, self-assessment agreement with the judge). Writes a
markdown table and a PNG chart. The base corpus is fixed and the same for every arm.

    .venv/bin/python benchmarks/self_enhancement.py --seeds 0 1 --budget experiment --out docs/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ARMS = ("baseline", "control", "round", "judge_round")
TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


def _metrics(rows: list[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in rows:
        key = {
            ("shapeseval", "eval", "accuracy"): r["tag"],
            ("shapeseval", "heldout", "accuracy"): f"heldout_{r['tag']}",
            ("vqa", "heldout", "accuracy"): f"vqa_{r['tag']}",
            ("self_assessment", "eval", "agreement"): f"agree_{r['tag']}",
            ("self_assessment", "eval", "parse_rate"): "parse_rate",
        }.get((r["benchmark"], r["split"], r["metric"]))
        if key:
            out[key] = float(r["value"])
    return out


def run_seed(
    work: Path,
    seed: int,
    budget: str,
    n_prompts: int,
    images_per_prompt: int,
    workers: int,
    log,
    rerun: list[str] | None = None,
) -> dict[str, dict[str, float]]:
    from flows.pipeline import _eval_refs, self_enhancement_round, train_pipeline
    from illume_core.settings import PipelineSettings
    from tasks import steps

    base = work / f"seed{seed}" / "base"
    t0 = time.perf_counter()
    # a base lake left by an earlier run of this work folder is reused through the flow's caches;
    # `rerun` refreshes the named tasks (and what depends on them) there
    out = train_pipeline(
        lake=str(base), budget=budget, seed=seed, workers=workers, lock_timeout_s=60, rerun=rerun or []
    )
    log(
        f"seed {seed}: base training {time.perf_counter() - t0:.0f} s, ShapesEval {out['shapeseval_overall']}"
    )
    results = {"baseline": _metrics(steps.read_ref(str(base), out["evaluation"]))}
    for arm in ("control", "round", "judge_round"):
        lake = work / f"seed{seed}" / arm
        if lake.exists():
            shutil.rmtree(lake)
        shutil.copytree(base, lake)
        t1 = time.perf_counter()
        if arm == "control":
            s = PipelineSettings.load(lake)
            ck = steps.current_checkpoint(str(lake))
            cand = steps.train_stage.fn(str(lake), s.model_dump_json(), "self_enhance", ck, 1, None, None)
            ev = steps.evaluate.fn(str(lake), 1, cand, _eval_refs(str(lake)), workers)
        else:
            r = self_enhancement_round(
                lake=str(lake),
                n_prompts=n_prompts,
                images_per_prompt=images_per_prompt,
                assessor="self" if arm == "round" else "judge",
                seed=seed,
                workers=workers,
                margin=1.0,
                min_parse_rate=0.0,
                lock_timeout_s=60,
            )
            ev = r["evaluation"]
            n_sft = len(steps.read_ref(str(lake), r["sft"]))
            log(f"seed {seed} {arm}: {n_sft} self-enhancement examples")
        results[arm] = _metrics(steps.read_ref(str(lake), ev))
        if arm != "control":
            results[arm]["sft_examples"] = float(n_sft)
        log(f"seed {seed} {arm}: {time.perf_counter() - t1:.0f} s, ShapesEval {results[arm].get('overall')}")
    return results


def write_report(
    results: dict[int, dict[str, dict[str, float]]], out: Path, cmd: str, minutes: float, corpus: dict
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def mean(arm: str, key: str) -> float | None:
        vals = [results[s][arm][key] for s in results if key in results[s].get(arm, {})]
        return statistics.mean(vals) if vals else None

    def fmt(v: float | None, col: str = "") -> str:
        return "-" if v is None else f"{v:.0f}" if col == "sft_examples" else f"{v:.3f}"

    cols = ["overall", *TAGS, "heldout_overall", "vqa_overall", "agree_overall", "parse_rate", "sft_examples"]
    lines = [
        "# Self-enhancement experiment",
        "",
        f"Command: `{cmd}`  ",
        f"Seeds: {sorted(results)}; total wall time {minutes:.0f} min on this project's 2-core CPU machine.  ",
        f"Base corpus (fixed, the same for every arm): {json.dumps(corpus)}",
        "",
        "Mean over seeds (ShapesEval accuracy per tag; `heldout` = compositions never trained on; "
        "`vqa` = exact-match VQA on held-out scenes; `agree` = self-assessment agreement with the judge over "
        "the four dimensions; `sft_examples` = the round's reformatted training examples):",
        "",
        "| arm | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for arm in ARMS:
        lines.append(f"| {arm} | " + " | ".join(fmt(mean(arm, c), c) for c in cols) + " |")
    lines += [
        "",
        "Per seed (ShapesEval overall / held-out overall / agreement):",
        "",
        "| seed | " + " | ".join(ARMS) + " |",
        "|---|" + "---|" * len(ARMS),
    ]
    for s in sorted(results):
        cells = [
            f"{fmt(results[s][a].get('overall'))} / {fmt(results[s][a].get('heldout_overall'))} / "
            f"{fmt(results[s][a].get('agree_overall'))}"
            for a in ARMS
            if a in results[s]
        ]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    d_overall = (mean("round", "overall") or 0) - (mean("control", "overall") or 0)
    d_agree = (mean("round", "agree_overall") or 0) - (mean("control", "agree_overall") or 0)
    lines += [
        "",
        f"Round minus control: ShapesEval overall {d_overall:+.3f} (goal >= +0.05), "
        f"agreement {100 * d_agree:+.1f} points (goal >= +5).",
    ]
    fig, ax = plt.subplots(figsize=(8, 3.8), dpi=100)
    width = 0.2
    keys = ["overall", *TAGS]
    for i, arm in enumerate(ARMS):
        vals = [mean(arm, k) or 0 for k in keys]
        ax.bar([j + i * width for j in range(len(keys))], vals, width, label=arm)
    ax.set_xticks([j + 1.5 * width for j in range(len(keys))], keys, rotation=20, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("ShapesEval accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = out.with_suffix(".png")
    fig.savefig(png)
    lines += ["", f"![ShapesEval per arm and tag]({png.name})", ""]
    # a hand-written reading below the tables (from "## Reading" on) survives a re-run
    old = out.read_text(encoding="utf-8") if out.exists() else ""
    kept = old[old.index("## Reading") :] if "## Reading" in old else ""
    out.write_text("\n".join(lines) + "\n" + kept, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--budget", default="experiment")
    ap.add_argument("--n-prompts", type=int, default=96)
    ap.add_argument("--images-per-prompt", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", default="/tmp/illume-experiment")
    ap.add_argument("--out", default="docs/RESULTS.md")
    ap.add_argument(
        "--rerun",
        nargs="*",
        default=[],
        help="with a --work folder of an earlier run: reuse its base training and refresh "
        "these train_pipeline tasks (e.g. evaluate, after a change to assessment decoding)",
    )
    args = ap.parse_args()
    from illume_core.settings import PipelineSettings

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log_path = work / "experiment.log"

    def log(msg: str) -> None:
        line = f"[{time.perf_counter() - t0:7.0f} s] {msg}"
        print(line, flush=True)
        with open(log_path, "a") as f:
            f.write(line + "\n")

    results = {}
    for seed in args.seeds:
        results[seed] = run_seed(
            work, seed, args.budget, args.n_prompts, args.images_per_prompt, args.workers, log, args.rerun
        )
        (work / "results.json").write_text(json.dumps(results, indent=2))
    corpus = PipelineSettings(budget=args.budget).corpus.__dict__
    cmd = (
        "python benchmarks/self_enhancement.py --seeds "
        + " ".join(map(str, args.seeds))
        + f" --budget {args.budget} --n-prompts {args.n_prompts} --images-per-prompt {args.images_per_prompt}"
        + (f" --work {args.work} --rerun {' '.join(args.rerun)}" if args.rerun else "")
    )
    write_report(
        results, Path(args.out), cmd, (time.perf_counter() - t0) / 60, {k: v for k, v in corpus.items()}
    )
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
