"""Training loops for the vision parts on ShapesWorld: the encoder, then the tokenizers.

Every batch is sampled on the fly from seeded scenes (`train-<seed>` stream); evaluation scenes
come from a separate `heldout-<seed>` stream. Same seed, same thread count: same weights.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import replace

import torch

from illume_core.model.config import IllumeConfig
from illume_core.model.images import palette_index, to_tensor
from illume_core.model.vision_encoder import ContrastiveModel, TextTower, VisionEncoder
from illume_core.model.vision_tokenizer import PatternTokenizer, PixelVQTokenizer, SemanticTokenizer
from illume_core.world.corpus import caption
from illume_core.world.scenes import COLORS, SHAPES, Scene, render, sample_scene

Progress = Callable[[int, dict[str, float]], None]


def train_stream(seed: int) -> random.Random:
    """The scene stream training batches are drawn from."""
    return random.Random(f"train-{seed}")


def heldout_stream(seed: int) -> random.Random:
    """The scene stream evaluations are drawn from (disjoint in practice from training)."""
    return random.Random(f"heldout-{seed}")


# share of hard negatives that change a shape (the rest change a colour): retrieval misses were
# almost all shape misses with the colours right, and 0.8 beat 0.5 on the tuning seed
# (docs/VISION.md)
SHAPE_NEGATIVES = 0.8


def hard_negative(scene: Scene, rng: random.Random) -> Scene:
    """The scene with one object's shape (or, less often, colour) changed: its caption differs in one word."""
    objs = list(scene.objects)
    i = rng.randrange(len(objs))
    o = objs[i]
    if rng.random() >= SHAPE_NEGATIVES:
        objs[i] = replace(o, color=rng.choice([c for c in COLORS if c != o.color]))
    else:
        objs[i] = replace(o, shape=rng.choice([s for s in SHAPES if s != o.shape]))
    return Scene(scene.size, tuple(objs))


def sample_batch(rng: random.Random, cfg: IllumeConfig, batch_size: int) -> tuple[list[Scene], torch.Tensor]:
    """`batch_size` fresh scenes and their renders (B, 3, H, W) in [0, 1]."""
    scenes = [sample_scene(rng, cfg.image_size) for _ in range(batch_size)]
    return scenes, to_tensor([render(s) for s in scenes])


# dead-code restarts run for this fraction of tokenizer training; the rest lets the decoder
# settle on codes that stay put
RESTARTS_UNTIL = 0.6


def _schedule(opt: torch.optim.Optimizer, step: int, steps: int, lr: float) -> None:
    """Linear warmup over 5% of the steps, then cosine decay to 10% of `lr`."""
    warm = max(1, steps // 20)
    if step < warm:
        f = (step + 1) / warm
    else:
        f = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))
    for g in opt.param_groups:
        g["lr"] = lr * f


def _optimizer_step(
    opt: torch.optim.Optimizer,
    params: list,
    out: dict[str, torch.Tensor],
    progress: Progress | None,
    step: int,
) -> None:
    """Backward the batch's loss, clip to norm 1, step, and report the step's figures."""
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    _report(progress, step, out)


def _report(progress: Progress | None, step: int, out: dict[str, torch.Tensor]) -> None:
    if progress is not None:
        progress(step, {k: float(v.detach()) for k, v in out.items() if v.dim() == 0})


def train_contrastive(
    cfg: IllumeConfig,
    steps: int,
    batch_size: int = 64,
    seed: int = 0,
    lr: float = 2e-3,
    progress: Progress | None = None,
    hard_negatives: bool = True,
) -> ContrastiveModel:
    """Pretrain encoder + text tower CLIP-style (plus the per-cell pixel head) on ShapesWorld.

    With `hard_negatives`, every image also meets the caption of its own scene with one colour
    or shape changed, so the encoder must bind each colour to its shape, not just list words.
    """
    if steps < 1 or batch_size < 2:
        raise ValueError(
            "contrastive training needs steps >= 1 and batch_size >= 2 (negatives come from the batch)"
        )
    torch.manual_seed(seed)
    model = ContrastiveModel(VisionEncoder(cfg), TextTower(width=cfg.vision_width, heads=cfg.vision_heads))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    rng = train_stream(seed)
    model.train()
    for step in range(steps):
        scenes, pixels = sample_batch(rng, cfg, batch_size)
        ids = model.text.tokenize([caption(s, rng) for s in scenes])
        negatives = None
        if hard_negatives:
            negatives = model.text.tokenize([caption(hard_negative(s, rng), rng) for s in scenes])
        _schedule(opt, step, steps, lr)
        out = model(pixels, ids, palette_index(pixels), negatives)
        _optimizer_step(opt, list(model.parameters()), out, progress, step)
    return model.eval()


def train_encoder(
    cfg: IllumeConfig,
    steps: int,
    batch_size: int = 64,
    seed: int = 0,
    lr: float = 2e-3,
    progress: Progress | None = None,
) -> VisionEncoder:
    """The understanding encoder after contrastive pretraining (see `train_contrastive`)."""
    return train_contrastive(cfg, steps, batch_size, seed, lr, progress).encoder


@torch.no_grad()
def retrieval_top1(model: ContrastiveModel, n: int = 100, seed: int = 0) -> float:
    """Held-out image-to-caption retrieval: fraction of n images whose best caption is their own."""
    rng = heldout_stream(seed)
    scenes, pixels = sample_batch(rng, model.encoder.cfg, n)
    captions = [caption(s, rng) for s in scenes]
    model.eval()
    sim = model.embed_images(pixels) @ model.embed_texts(model.text.tokenize(captions)).T  # (n, n)
    best = sim.argmax(1).tolist()
    # a duplicate caption (two scenes both "a photo of a red circle") is a correct answer too
    return sum(captions[b] == captions[i] for i, b in enumerate(best)) / n


def _train_codes(
    make: Callable[[], SemanticTokenizer | PixelVQTokenizer],
    steps: int,
    batch_size: int,
    seed: int,
    lr: float,
    progress: Progress | None,
) -> SemanticTokenizer | PixelVQTokenizer:
    """Build a tokenizer with `make` (after seeding) and train it on fresh ShapesWorld renders."""
    if steps < 1 or batch_size < 1:
        raise ValueError("tokenizer training needs steps >= 1 and batch_size >= 1")
    torch.manual_seed(seed)
    model = make()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = train_stream(seed + 1)
    model.train()
    for step in range(steps):
        _, pixels = sample_batch(rng, model.cfg, batch_size)
        _schedule(opt, step, steps, lr)
        model.quantizer.restarts = step < RESTARTS_UNTIL * steps
        out = model.losses(pixels)
        _optimizer_step(opt, params, out, progress, step)
    return model.eval()


def train_tokenizer(
    cfg: IllumeConfig,
    encoder: VisionEncoder,
    steps: int,
    batch_size: int = 32,
    seed: int = 0,
    lr: float = 2e-3,
    progress: Progress | None = None,
    scenes: int = 20000,
) -> SemanticTokenizer | PatternTokenizer:
    """Train the preset's tokenizer on a frozen encoder: the semantic one (quantizer, feature
    reconstructor, pixel decoder) for `steps` steps, or fit the pattern one's masks with `steps`
    k-means iterations over the cells of `scenes` fresh renders."""
    if cfg.tokenizer == "pattern":
        return fit_pattern_tokenizer(cfg, encoder, steps, scenes, seed, progress)
    return _train_codes(lambda: SemanticTokenizer(cfg, encoder), steps, batch_size, seed, lr, progress)


def fit_pattern_tokenizer(
    cfg: IllumeConfig,
    encoder: VisionEncoder | None,
    iters: int,
    scenes: int,
    seed: int = 0,
    progress: Progress | None = None,
) -> PatternTokenizer:
    """Fit the pattern tokenizer's masks to the cells of `scenes` fresh renders (`iters` k-means rounds)."""
    if iters < 1 or scenes < 1:
        raise ValueError("fitting the pattern tokenizer needs iters >= 1 and scenes >= 1")
    torch.manual_seed(seed)
    rng = train_stream(seed + 1)
    # rendered in chunks: one (B, 64, 64, 11) palette distance of 20,000 renders is 3.6 GB
    chunks = [sample_batch(rng, cfg, min(1000, scenes - i))[1] for i in range(0, scenes, 1000)]
    return PatternTokenizer(cfg, encoder).fit(chunks, iters, progress).eval()


def train_pixel_tokenizer(
    cfg: IllumeConfig,
    steps: int,
    batch_size: int = 32,
    seed: int = 0,
    lr: float = 2e-3,
    progress: Progress | None = None,
) -> PixelVQTokenizer:
    """Train the pixel-VQ baseline tokenizer (conv encoder, quantizer, pixel decoder) on pixels only."""
    return _train_codes(lambda: PixelVQTokenizer(cfg), steps, batch_size, seed, lr, progress)


@torch.no_grad()
def reconstruction_accuracy(
    model: SemanticTokenizer | PixelVQTokenizer, n: int = 100, seed: int = 0
) -> dict[str, float]:
    """On n held-out renders: exact-colour pixel accuracy of encode -> decode, object-pixel accuracy, usage."""
    _, pixels = sample_batch(heldout_stream(seed), model.cfg, n)
    ids = model.encode(pixels)  # (n, N)
    recon = model.decode(ids)  # (n, 3, H, W)
    truth, got = palette_index(pixels), palette_index(recon)  # (n, H, W)
    fg = truth > 0
    return {
        "pixel_acc": float((truth == got).float().mean()),
        "object_pixel_acc": float((truth == got)[fg].float().mean()),
        "exact_images": float((truth == got).flatten(1).all(1).float().mean()),
        "codebook_usage": model.codebook_usage(ids),
    }
