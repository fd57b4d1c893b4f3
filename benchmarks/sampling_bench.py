"""Image-token sampling throughput: KV cache + stacked CFG vs recomputing the prefix every step.

Prints image tokens/s for both paths at a batch of prompts (each with its unconditional twin, so
2 x batch rows run), their ratio, and achieved FLOP/s as a fraction of a plain fp32 matmul's
FLOP/s measured in the same run; both draw with the pipeline's setting (`IMAGE_SAMPLING`). Usage:
    .venv/bin/python benchmarks/sampling_bench.py --preset tiny --batch 16 --threads 2
    .venv/bin/python benchmarks/sampling_bench.py --override '{"patch_size": 8}'   # 64 image tokens
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from illume_core.model.config import get_preset
from illume_core.model.processor import Processor
from illume_core.model.sampling import IMAGE_SAMPLING, generate_images
from illume_core.model.text_tokenizer import TextTokenizer
from illume_core.model.unified import IllumeModel
from illume_core.world.scenes import COLORS, NUMBERS, SHAPES


def matmul_flops_per_s(n: int = 1024, seconds: float = 2.0) -> float:
    """Peak-ish fp32 FLOP/s of a square matmul on this machine, now."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start)


def forward_flops(model: IllumeModel, rows: int, prompt_len: int, n_new: int, cached: bool) -> float:
    """Matmul FLOPs of sampling `n_new` image tokens for `rows` rows after a `prompt_len` prompt.

    Per token read: 2 x (LLM body weights) + attention scores and mixing (4 x layers x width x
    context); per sampled position: 2 x width x codebook for the image-only head.
    """
    cfg = model.cfg
    body = sum(p.numel() for n, p in model.llm.model.named_parameters() if "embed_tokens" not in n)
    head = 2 * cfg.hidden_size * cfg.codebook_size
    total = 0.0
    for step in range(n_new):
        ctx = prompt_len + step  # tokens visible to the newest one
        read = (prompt_len if step == 0 else 1) if cached else ctx
        # the tokens read this step attend to on average about ctx - read / 2 earlier tokens
        attn = 4 * cfg.num_layers * cfg.hidden_size * (ctx - read / 2)
        total += rows * (read * (2 * body + attn) + head)
    return total


def run(model: IllumeModel, proc: Processor, prompts: list[str], no_cache: bool) -> float:
    start = time.perf_counter()
    codes = generate_images(model, proc, prompts, list(range(len(prompts))), IMAGE_SAMPLING, no_cache)
    elapsed = time.perf_counter() - start
    assert codes.shape == (len(prompts), model.cfg.image_tokens)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--override",
        default="{}",
        help="JSON of preset fields to replace, e.g. '{\"patch_size\": 8}' for 64 image tokens on tiny",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = get_preset(args.preset, **json.loads(args.override))
    words = [*SHAPES, *SHAPES.values(), *COLORS, *NUMBERS.values(), "a", "photo", "of", "generate", "image"]
    tok = TextTokenizer.train([" ".join(words)] * 20, vocab_size=cfg.text_vocab_size)
    torch.manual_seed(0)
    model = IllumeModel(cfg, tok.vocab_size).eval()
    proc = Processor(cfg, tok)
    shapes, colors = list(SHAPES.values()), list(COLORS)
    prompts = [f"a photo of two {colors[i % 10]} {shapes[i % 5]}" for i in range(args.batch)]
    prompt_len = proc.collate(
        [proc.t2i_prompt(p) for p in prompts] + [proc.t2i_prompt(None)], "left"
    ).input_ids.shape[1]
    n = cfg.image_tokens
    rows = 2 * args.batch

    peak = matmul_flops_per_s()
    run(model, proc, prompts[:2], no_cache=False)  # warm-up
    t_cache = min(run(model, proc, prompts, no_cache=False) for _ in range(2))
    t_plain = run(model, proc, prompts, no_cache=True)
    f_cache = forward_flops(model, rows, prompt_len, n, cached=True)
    f_plain = forward_flops(model, rows, prompt_len, n, cached=False)

    print(f"preset {cfg.name}: LLM {sum(p.numel() for p in model.llm.parameters()) / 1e6:.1f}M params, "
          f"{n} image tokens/image, batch {args.batch} (+{args.batch} uncond rows), prompt {prompt_len} tokens, "
          f"{args.threads} threads")  # fmt: skip
    print(f"plain fp32 matmul: {peak / 1e9:.1f} GFLOP/s")
    for name, t, f in (("KV cache + CFG", t_cache, f_cache), ("no cache (recompute)", t_plain, f_plain)):
        print(
            f"{name:>22}: {args.batch * n / t:8.1f} image tokens/s  {args.batch / t:6.2f} images/s  "
            f"{f / t / 1e9:6.1f} GFLOP/s = {f / t / peak:5.1%} of matmul"
        )
    print(f"speed-up of the KV cache: {t_plain / t_cache:.1f}x")


if __name__ == "__main__":
    main()
