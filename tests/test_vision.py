"""Image conversions, the understanding encoder and its contrastive pretraining."""

from __future__ import annotations

import random

import pytest
import torch

from illume_core.model.config import get_preset
from illume_core.model.images import from_png, palette_index, palette_render, png_bytes, to_pil, to_tensor
from illume_core.model.vision_encoder import ContrastiveModel, TextTower, VisionEncoder, conv_stem
from illume_core.train.vision import (
    hard_negative,
    retrieval_top1,
    sample_batch,
    train_contrastive,
)
from illume_core.world.corpus import caption
from illume_core.world.scenes import render, sample_scene

torch.set_num_threads(2)


def _renders(n: int, size: int = 64, seed: int = 0):
    rng = random.Random(seed)
    return [render(sample_scene(rng, size)) for _ in range(n)]


def test_tensor_pil_png_round_trip_is_exact():
    imgs = _renders(3)
    x = to_tensor(imgs)
    assert x.shape == (3, 3, 64, 64) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    back = to_pil(x)
    assert [b.tobytes() for b in back] == [i.tobytes() for i in imgs]
    assert from_png(png_bytes(imgs[0])).tobytes() == imgs[0].tobytes()


def test_renders_are_exact_palette_colours():
    x = to_tensor(_renders(4))
    assert torch.equal(palette_render(palette_index(x)), x)


def test_to_pil_clamps_out_of_range():
    img = to_pil(torch.full((3, 4, 4), 2.0))[0]
    assert img.getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize(
    "data, match",
    [
        (b"", "non-empty"),
        (b"GIF89a not a png", "not a PNG"),
        (png_bytes(render(sample_scene(random.Random(1))))[:60], "corrupt PNG"),
    ],
)
def test_corrupt_png_gives_clear_error(data, match):
    with pytest.raises(ValueError, match=match):
        from_png(data)


def test_to_tensor_refuses_mixed_sizes():
    with pytest.raises(ValueError, match="share one size"):
        to_tensor([_renders(1, 64)[0], _renders(1, 32)[0]])


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_encoder_gives_one_feature_per_cell(preset):
    cfg = get_preset(preset)
    enc = VisionEncoder(cfg)
    out = enc(to_tensor(_renders(2, cfg.image_size)))
    assert out.shape == (2, cfg.encoder_cells, cfg.vision_width)
    assert torch.isfinite(out).all()


def test_encoder_refuses_wrong_size():
    with pytest.raises(ValueError, match="image_size"):
        VisionEncoder(get_preset("tiny"))(torch.zeros(1, 3, 32, 32))


def test_text_tower_covers_the_caption_vocabulary():
    tower = TextTower(width=32, heads=2)
    rng = random.Random(0)
    for _ in range(50):
        ids = tower.tokenize([caption(sample_scene(rng), rng)])
        assert (ids != 1).all(), "a caption word fell outside the closed vocabulary"
    ids = tower.tokenize(["a photo of a red circle", "two blue squares left of a green cross"])
    assert ids.shape[0] == 2 and tower(ids).shape == (2, 32)


def test_contrastive_loss_falls_and_training_is_deterministic():
    cfg = get_preset("tiny", vision_width=32, vision_heads=2, vision_layers=1)
    logs: list[float] = []
    a = train_contrastive(
        cfg, steps=15, batch_size=12, seed=3, lr=3e-3, progress=lambda s, d: logs.append(d["loss"])
    )
    assert sum(logs[-5:]) / 5 < sum(logs[:5]) / 5
    b = train_contrastive(cfg, steps=15, batch_size=12, seed=3, lr=3e-3)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, msg=k)
    top1 = retrieval_top1(a, n=20, seed=0)
    assert 0.0 <= top1 <= 1.0


def test_contrastive_model_gives_all_losses():
    cfg = get_preset("tiny", vision_width=32, vision_heads=2, vision_layers=1)
    model = ContrastiveModel(VisionEncoder(cfg), TextTower(width=32, heads=2))
    rng = random.Random(0)
    scenes, pixels = sample_batch(rng, cfg, 4)
    ids = model.text.tokenize([caption(s, rng) for s in scenes])
    out = model(pixels, ids, palette_index(pixels))
    assert set(out) >= {"clip", "pixel", "loss"}
    torch.testing.assert_close(out["loss"], out["clip"] + out["pixel"])
    out["loss"].backward()
    assert model.encoder.patchify.weight.grad is not None
    assert model.encoder.stem[0].weight.grad is not None
    # hard negatives only add competitors: the image-to-caption loss can only grow
    negatives = model.text.tokenize([caption(hard_negative(s, rng), rng) for s in scenes])
    with torch.no_grad():
        assert float(model(pixels, ids, None, negatives)["clip"]) > float(model(pixels, ids)["clip"])


def test_hard_negative_changes_one_colour_or_shape():
    rng = random.Random(4)
    for _ in range(30):
        scene = sample_scene(rng)
        other = hard_negative(scene, rng)
        diffs = [(a, b) for a, b in zip(scene.objects, other.objects, strict=True) if a != b]
        assert len(diffs) == 1
        a, b = diffs[0]
        assert (a.color != b.color) != (a.shape != b.shape)
        assert a.box == b.box


@pytest.mark.parametrize("patch", [1, 2, 3, 4, 6, 8])
def test_conv_stem_brings_any_patch_size_to_the_cell_grid(patch):
    cfg = get_preset(
        "tiny",
        image_size=48,
        patch_size=patch,
        vision_width=16,
        vision_heads=2,
        vision_layers=1,
        max_seq_len=2400,
    )
    stem = conv_stem(cfg)
    assert stem(torch.rand(2, 3, 48, 48)).shape == (2, 16, cfg.grid, cfg.grid)
    assert VisionEncoder(cfg)(torch.rand(2, 3, 48, 48)).shape == (2, cfg.grid**2, 16)


def test_image_embedding_pools_the_max_over_cells():
    cfg = get_preset("tiny", vision_width=32, vision_heads=2, vision_layers=1)
    model = ContrastiveModel(VisionEncoder(cfg), TextTower(width=32, heads=2)).eval()
    pixels = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        feats = model.encoder(pixels)
        expect = torch.nn.functional.normalize(model.image_proj(feats.amax(1)), dim=-1)
        torch.testing.assert_close(model.embed_images(pixels), expect)
