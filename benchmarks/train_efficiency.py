"""Training efficiency of the LLM stages: tokens per second that are not padding, and FLOP/s as a
fraction of a plain matmul's peak at the same precision, measured in the same run.

For each setting (preset x batching x precision) it draws real stage-2 batches from a small base
corpus (the recipe's mix), times `--steps` optimizer steps after `--warmup` steps, and reports
seconds per step, the share of padding, real tokens per second, and FLOP/s by 6 x N x T (N the
LLM's parameters without the input embeddings, T the real tokens; the vision encoder's work on
understanding examples is not counted, so the fraction is a lower bound). "before" is the
earlier design (tiny-256, mixed-kind batches padded to the longest, fp32), "after" today's
(tiny, one kind per batch). Usage:

    .venv/bin/python benchmarks/train_efficiency.py --steps 20
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from illume_core.model.config import get_preset
from illume_core.model.vision_tokenizer import make_tokenizer
from illume_core.train.data import BaseCorpus, CorpusSpec, StageData
from illume_core.train.loop import TrainConfig, make_optimizer
from illume_core.train.recipes import get_recipe
from illume_core.train.stages import init_model, stage_groups
from illume_core.train.vision import fit_pattern_tokenizer

SETTINGS = [  # (label, preset, one kind per batch, precision)
    ("before: tiny-256, mixed batches, fp32", "tiny-256", False, "fp32"),
    ("tiny-256, one kind per batch, fp32", "tiny-256", True, "fp32"),
    ("tiny-256, one kind per batch, bf16", "tiny-256", True, "bf16"),
    ("tiny, mixed batches, fp32", "tiny", False, "fp32"),
    ("after: tiny, one kind per batch, fp32", "tiny", True, "fp32"),
    ("tiny, one kind per batch, bf16", "tiny", True, "bf16"),
]


def matmul_peak(dtype: torch.dtype, n: int = 1024, reps: int = 20) -> float:
    """GFLOP/s of an n x n matmul at `dtype` (best of `reps`)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def measure(preset: str, one_kind: bool, precision: str, steps: int, warmup: int) -> dict:
    cfg = get_preset(preset)
    tok = (
        fit_pattern_tokenizer(cfg, None, 2, 2000)
        if cfg.tokenizer == "pattern"
        else make_tokenizer(cfg).eval()  # untrained: its codes are as long as trained ones
    )
    parts = init_model(cfg, tok, n_text=2000)
    base = BaseCorpus(cfg, CorpusSpec(0, 3000, 1000, 500))
    recipe = get_recipe("stage2", preset, steps=steps + warmup)
    data = StageData(base, parts.processor, tok.encode, recipe, 0, one_kind_per_batch=one_kind)
    groups = stage_groups(parts.model, recipe)
    opt = make_optimizer(
        groups,
        TrainConfig(steps=steps + warmup, optimizer=recipe.optimizer),
        {id(p) for p in parts.model.hidden_matrices()},
    )
    model = parts.model.train()
    body = sum(p.numel() for n, p in model.llm.named_parameters() if "embed_tokens" not in n)
    if model.factorized:
        body += sum(p.numel() for n, p in model.gen_codes.named_parameters() if n.startswith("head"))
    dtype = torch.bfloat16 if precision == "bf16" else None
    batches = [next(data) for _ in range(steps + warmup)]  # drawn (and encoded) off the clock
    real = padded = 0
    t0 = 0.0
    for i, batch in enumerate(batches):
        if i == warmup:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = model(batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            real += int(batch.attention_mask.sum())
            padded += batch.attention_mask.numel()
    wall = time.perf_counter() - t0
    return {
        "s_per_step": wall / steps,
        "padding": 1 - real / padded,
        "real_tokens_per_s": real / wall,
        "gflops": 6 * body * real / wall / 1e9,
        "llm_params_m": body / 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak (1024^2, {args.threads} threads): fp32 {peak['fp32']:.0f} GFLOP/s, "
          f"bf16 {peak['bf16']:.0f} GFLOP/s", flush=True)  # fmt: skip
    print(f"{'setting':<40} {'s/step':>7} {'padding':>8} {'real tok/s':>10} {'GFLOP/s':>8} {'of peak':>8}")
    for label, preset, one_kind, precision in SETTINGS:
        torch.manual_seed(0)
        r = measure(preset, one_kind, precision, args.steps, args.warmup)
        frac = r["gflops"] / peak[precision]
        print(f"{label:<40} {r['s_per_step']:7.3f} {r['padding']:8.1%} {r['real_tokens_per_s']:10.0f} "
              f"{r['gflops']:8.1f} {frac:8.1%}", flush=True)  # fmt: skip
        print(json.dumps({"setting": label, **r, "fraction_of_peak": frac}), flush=True)


if __name__ == "__main__":
    main()
