"""The vision tokenizers: quantizer mechanics, encode/decode shapes, training and determinism."""

from __future__ import annotations

import random

import pytest
import torch

from illume_core.model.config import get_preset
from illume_core.model.images import to_tensor
from illume_core.model.vision_encoder import VisionEncoder
from illume_core.model.vision_tokenizer import PixelVQTokenizer, SemanticTokenizer, VectorQuantizer
from illume_core.train.vision import reconstruction_accuracy, train_pixel_tokenizer, train_tokenizer
from illume_core.world.scenes import render, sample_scene

torch.set_num_threads(2)


def _pixels(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    rng = random.Random(seed)
    return to_tensor([render(sample_scene(rng, size)) for _ in range(n)])


@pytest.mark.parametrize("preset", ["tiny-256", "small"])
@pytest.mark.parametrize("kind", [SemanticTokenizer, PixelVQTokenizer])
def test_encode_decode_round_trip_shapes(preset, kind):
    cfg = get_preset(preset)
    tok = kind(cfg).eval()
    ids = tok.encode(_pixels(2, cfg.image_size))
    assert ids.shape == (2, cfg.image_tokens) and ids.dtype == torch.long
    assert 0 <= int(ids.min()) and int(ids.max()) < cfg.codebook_size
    out = tok.decode(ids)
    assert out.shape == (2, 3, cfg.image_size, cfg.image_size)
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert 0.0 < tok.codebook_usage(ids) <= 1.0


def test_decode_refuses_bad_ids():
    cfg = get_preset("tiny-256")
    tok = SemanticTokenizer(cfg)
    with pytest.raises(ValueError, match="code ids must lie"):
        tok.decode(torch.full((1, cfg.image_tokens), cfg.codebook_size))
    with pytest.raises(ValueError, match="decode expects ids"):
        tok.decode(torch.zeros(1, 3, dtype=torch.long))


def test_semantic_encoder_stays_frozen():
    cfg = get_preset("tiny-256")
    enc = VisionEncoder(cfg)
    tok = SemanticTokenizer(cfg, enc).train()
    assert not tok.encoder.training
    assert all(not p.requires_grad for p in tok.encoder.parameters())
    assert tok.encoder is not enc  # a copy: later fine-tuning of the understanding encoder leaves it alone


def test_quantizer_picks_nearest_code_and_passes_gradient_straight_through():
    vq = VectorQuantizer(4, 2).eval()
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]))
    z = torch.tensor([[[0.9, 0.1], [0.1, 0.2], [4.0, 4.5]]], requires_grad=True)  # (1, 3, 2)
    zq, ids, commit = vq(z)
    assert ids.tolist() == [[1, 0, 3]]
    torch.testing.assert_close(zq.detach(), vq.codebook[ids])
    (zq * torch.tensor([1.0, 2.0])).sum().backward()
    torch.testing.assert_close(z.grad, torch.tensor([[[1.0, 2.0]] * 3]))
    assert float(commit.detach()) > 0


def test_dead_code_restart_revives_unused_codes():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 4, restart_after=3).train()
    vq.codebook.fill_(100.0)  # every code far away: all but one stay unused
    vq.ema_sum.fill_(100.0)
    vq.codebook[0] = 0.0
    vq.ema_sum[0] = 0.0
    vq.initialised.fill_(True)  # skip the data init: this test is about restarts
    z = torch.randn(2, 32, 4)
    assert len(vq.nearest(z).unique()) == 1
    for _ in range(5):
        vq(z)
    assert len(vq.nearest(z).unique()) >= 8
    assert float(vq.codebook.abs().max()) < 50  # revived codes sit on the data


def test_restart_goes_to_the_worst_fitted_vectors():
    vq = VectorQuantizer(4, 2, restart_after=1).train()
    vq.initialised.fill_(True)
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [50.0, 50.0], [60.0, 60.0], [70.0, 70.0]]))
    vq.unused_for.copy_(torch.tensor([0, 5, 0, 0]))  # only code 1 is dead
    recent = torch.tensor([[0.1, 0.0], [0.0, 0.2], [9.0, -9.0], [0.3, 0.1]])
    assert vq.restart_dead(recent) == 1
    torch.testing.assert_close(vq.codebook[1], torch.tensor([9.0, -9.0]), atol=0.5, rtol=0.0)


def test_first_training_call_puts_every_code_on_the_data():
    torch.manual_seed(0)
    vq = VectorQuantizer(32, 4).train()
    z = torch.randn(1, 64, 4) + 10.0  # far from the random init around 0
    vq(z)
    assert bool(vq.initialised)
    assert float((vq.codebook - 10.0).abs().max()) < 5.0


def test_short_training_reduces_loss_and_is_deterministic():
    cfg = get_preset(
        "tiny-256", vision_width=32, vision_heads=2, vision_layers=1, codebook_size=64, decoder_width=16
    )
    torch.manual_seed(0)
    enc = VisionEncoder(cfg)
    logs: list[float] = []
    a = train_tokenizer(
        cfg, enc, steps=15, batch_size=8, seed=1, lr=3e-3, progress=lambda s, d: logs.append(d["loss"])
    )
    assert sum(logs[-3:]) / 3 < sum(logs[:3]) / 3
    b = train_tokenizer(cfg, enc, steps=15, batch_size=8, seed=1, lr=3e-3)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, msg=k)
    px = _pixels(4, seed=9)
    assert torch.equal(a.encode(px), b.encode(px))
    acc = reconstruction_accuracy(a, n=8)
    assert 0.0 <= acc["pixel_acc"] <= 1.0 and 0.0 < acc["codebook_usage"] <= 1.0


def test_pixel_baseline_training_reduces_loss():
    cfg = get_preset("tiny-256", codebook_size=64, decoder_width=16)
    logs: list[float] = []
    train_pixel_tokenizer(
        cfg, steps=15, batch_size=8, seed=0, lr=3e-3, progress=lambda s, d: logs.append(d["pixel"])
    )
    assert sum(logs[-3:]) / 3 < sum(logs[:3]) / 3


def test_semantic_tokenizer_codes_depend_on_the_cells_own_pixels_only():
    """A cell's code is keyed on its exact pixels: the same 4x4 content gets the same code in any
    surroundings, and the semantic features (which carry context) only shape training."""
    cfg = get_preset("tiny-256", codebook_size=64, decoder_width=16)
    torch.manual_seed(0)
    tok = SemanticTokenizer(cfg).eval()
    a = _pixels(1, cfg.image_size, seed=3)
    b = _pixels(1, cfg.image_size, seed=4)
    p = cfg.patch_size
    # copy cell (5, 7) of a into cell (5, 7) of b; every other cell of b stays different
    b[:, :, 5 * p : 6 * p, 7 * p : 8 * p] = a[:, :, 5 * p : 6 * p, 7 * p : 8 * p]
    ids_a, ids_b = tok.encode(a), tok.encode(b)
    cell = 5 * cfg.grid + 7
    assert int(ids_a[0, cell]) == int(ids_b[0, cell])
    # and the encoder is not consulted: changing its weights leaves the codes as they are
    with torch.no_grad():
        for w in tok.encoder.parameters():
            w.add_(1.0)
    assert torch.equal(tok.encode(a), ids_a)


def test_first_training_call_spreads_codes_over_distinct_vectors():
    vq = VectorQuantizer(8, 2).train()
    # 90 copies of one vector (the background) and 10 distinct ones
    flat = torch.cat([torch.zeros(90, 2), torch.arange(1, 11).float()[:, None].repeat(1, 2)])
    vq(flat[None])
    # the first call put the 8 codes on 8 different data vectors, not 7 of them on the background
    assert len(torch.unique(vq.codebook.round(decimals=1), dim=0)) == 8


def test_pattern_table_decodes_a_single_pattern_code_to_its_exact_pixels():
    # two training calls, no gradient step (the first only places the codes): the table alone
    # must already draw exactly every cell whose code stood for that one pattern in every call
    from illume_core.model.images import palette_index

    torch.manual_seed(0)
    cfg = get_preset("tiny-256")
    tok = SemanticTokenizer(cfg).train()
    p, g = cfg.patch_size, cfg.grid
    pixels = _pixels(4)
    truth = palette_index(pixels)  # (4, H, W)
    cells = truth.reshape(4, g, p, g, p).permute(0, 1, 3, 2, 4).reshape(-1, p * p)  # (4N, p*p)
    seen: dict[int, set[tuple[int, ...]]] = {}  # code -> the cell patterns the table was given for it
    update = tok.decoder.update_patterns

    def recording(ids, patterns, moved):
        for code, cell in zip(ids.reshape(-1).tolist(), cells.tolist(), strict=True):
            seen.setdefault(code, set()).add(tuple(cell))
        update(ids, patterns, moved)

    tok.decoder.update_patterns = recording
    tok.losses(pixels)
    tok.losses(pixels)
    tok.eval()
    ids = tok.encode(pixels)  # (4, N)
    flat = ids.reshape(-1)
    pure = torch.tensor([seen.get(c) == {tuple(cells[i].tolist())} for i, c in enumerate(flat.tolist())])
    assert pure.float().mean() > 0.9
    table = tok.decoder.code_prior(ids).argmax(1)  # (4, H, W): the table's own drawing
    got = table.reshape(4, g, p, g, p).permute(0, 1, 3, 2, 4).reshape(-1, p * p)
    assert bool((got[pure] == cells[pure]).all())


def test_a_restarted_code_forgets_its_old_pattern():
    cfg = get_preset("tiny-256", codebook_size=8, code_dim=4)
    tok = SemanticTokenizer(cfg)
    dec = tok.decoder
    ids = torch.zeros(1, cfg.image_tokens, dtype=torch.long)  # every cell code 0
    red = torch.zeros(1, dec.pattern_sum.shape[1], cfg.grid, cfg.grid)
    red[:, 1 * cfg.patch_size**2 : 2 * cfg.patch_size**2] = 1.0  # palette class 1 everywhere
    dec.update_patterns(ids, red, torch.zeros(0, dtype=torch.long))
    assert int(dec.code_prior(ids).argmax(1).unique().item()) == 1
    dec.update_patterns(torch.ones_like(ids), red, torch.tensor([0]))  # code 0 moved; code 1 used
    prior = dec.code_prior(ids)  # code 0 again: back to the uniform start
    assert float(prior.std()) < 1e-6
