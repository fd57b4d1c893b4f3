"""What a per-cell codebook can reach at best: replace each grid cell of held-out prompt renders by
the nearest (Hamming) of the K most frequent exact cell patterns of training renders, and judge.

No model is trained: this bounds every tokenizer whose code names one cell's pixels. Usage:

    .venv/bin/python benchmarks/tokenizer_oracle.py --image-size 64 --patch-size 4 --k 1024 2048 4096
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
import torch

from illume_core.judge import judge_image
from illume_core.model.config import get_preset
from illume_core.model.images import palette_index, palette_render, to_pil, to_tensor
from illume_core.train.vision import heldout_stream, sample_batch, train_stream
from illume_core.world.prompts import generate_prompts, scene_for
from illume_core.world.scenes import render


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--patch-size", type=int, default=4)
    ap.add_argument("--k", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--train-renders", type=int, default=3840)
    ap.add_argument("--per-tag", type=int, default=15, help="held-out prompts per tag for the judge")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(2)
    size, p = args.image_size, args.patch_size
    g = size // p
    cfg = get_preset("tiny", image_size=size, patch_size=p, adapter_pool=1)

    def cells(c: torch.Tensor) -> torch.Tensor:  # (n, S, S) -> (n*g*g, p*p)
        return c.reshape(-1, g, p, g, p).permute(0, 1, 3, 2, 4).reshape(-1, p * p)

    def uncells(x: torch.Tensor, n: int) -> torch.Tensor:  # (n*g*g, p*p) -> (n, S, S)
        return x.reshape(n, g, g, p, p).permute(0, 1, 3, 2, 4).reshape(n, size, size)

    rng = train_stream(args.seed - 1)
    cls = torch.cat([palette_index(sample_batch(rng, cfg, 64)[1]) for _ in range(args.train_renders // 64)])
    counts = Counter(map(bytes, cells(cls).numpy().astype(np.uint8)))
    print(f"{size} px, {p}-px cells: {len(counts)} distinct patterns in {cls.shape[0] * g * g} cells")
    prompts = generate_prompts(seed=10_000 + args.seed, per_tag=args.per_tag)
    hr = heldout_stream(args.seed)
    renders = [render(scene_for(m, hr, size)) for m in prompts]
    truth = palette_index(to_tensor(renders))
    q = cells(truth)
    for k in args.k:
        top = b"".join(pat for pat, _ in counts.most_common(k))
        book = torch.tensor(np.frombuffer(top, dtype=np.uint8).reshape(-1, p * p)).long()
        rec = torch.cat([book[(part[:, None, :] != book[None]).sum(-1).argmin(1)] for part in q.split(4096)])
        rec = uncells(rec, len(renders))
        tags: dict[str, list[bool]] = {}
        for meta, im in zip(prompts, to_pil(palette_render(rec)), strict=True):
            tags.setdefault(meta.tag, []).append(judge_image(im, meta).correct)
        per_tag = {t: sum(v) / len(v) for t, v in tags.items()}
        obj = float((rec == truth)[truth > 0].float().mean())
        print(
            f"K={k}: judge overall {sum(per_tag.values()) / len(per_tag):.3f}, object pixels {obj:.4f}, "
            + ", ".join(f"{t} {v:.2f}" for t, v in per_tag.items())
        )


if __name__ == "__main__":
    main()
