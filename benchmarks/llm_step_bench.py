"""Seconds per LLM training step (forward, backward, AdamW) for each kind of example.

Builds the preset's IllumeModel with an untrained text tokenizer and times one fixed batch of
text-to-image, editing and captioning examples (random codes, real ShapesWorld renders). Usage:

    .venv/bin/python benchmarks/llm_step_bench.py --preset tiny --batch 32 --threads 2
    .venv/bin/python benchmarks/llm_step_bench.py --compile   # torch.compile, for comparison
    .venv/bin/python benchmarks/llm_step_bench.py --override '{"patch_size": 8, "adapter_pool": 1}'
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch

from illume_core.model.config import get_preset
from illume_core.model.processor import Processor
from illume_core.model.text_tokenizer import TextTokenizer
from illume_core.model.unified import IllumeModel
from illume_core.world.corpus import caption
from illume_core.world.scenes import render, sample_scene


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--override", default="{}", help="JSON of preset fields to replace")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="autocast dtype")
    ap.add_argument(
        "--compile", action="store_true", help="torch.compile(dynamic=True) the model (the warm-up step compiles)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = get_preset(args.preset, **json.loads(args.override))
    rng = random.Random(0)
    scenes = [sample_scene(rng, cfg.image_size) for _ in range(64)]
    texts = [caption(s, rng) for s in scenes]
    tok = TextTokenizer.train(texts * 4, vocab_size=cfg.text_vocab_size)
    torch.manual_seed(0)
    model = IllumeModel(cfg, tok.vocab_size)
    proc = Processor(cfg, tok)
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    step_model = torch.compile(model, dynamic=True) if args.compile else model
    images = [render(s) for s in scenes]

    def example(kind: str, i: int):
        codes = torch.randint(0, cfg.codebook_size, (cfg.image_tokens,))
        im, text = images[i % len(images)], texts[i % len(texts)]
        if kind == "text-to-image":
            return proc.text_to_image(text, codes)
        if kind == "editing":
            return proc.edit(im, "remove the red circle", codes)
        return proc.caption(im, text)

    print(
        f"preset {cfg.name} {json.loads(args.override)}: {cfg.image_tokens} image tokens, "
        f"{cfg.understanding_tokens} understanding positions, batch {args.batch}, {args.threads} threads, "
        f"{args.precision}{', compiled' if args.compile else ''}"
    )
    for kind in ("text-to-image", "editing", "captioning"):
        batch = proc.collate([example(kind, i) for i in range(args.batch)])
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                loss = step_model(batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            times.append(time.perf_counter() - t)
        print(
            f"{kind}: sequence {batch.input_ids.shape[1]} tokens, {min(times[1:]):.3f} s/step (best of "
            f"{args.reps - 1} after a warm-up of {times[0]:.1f} s)"
        )


if __name__ == "__main__":
    main()
