"""Sampling: KV cache parity, CFG at scale 1 equals plain conditional sampling, seeds, filters."""

from __future__ import annotations

import pytest
import torch
from model_helpers import micro_model, scene_image
from pydantic import ValidationError

from illume_core.model.sampling import SamplingParams, answer, edit_images, generate_images, sample_logits

torch.set_num_threads(1)

PROMPTS = ["two red circles", "a blue square left of a green cross", "three yellow triangles"]


def test_greedy_images_identical_with_and_without_kv_cache():
    model, proc = micro_model()
    kw = dict(seeds=[0, 1, 2], params=SamplingParams(cfg_scale=2.0, temperature=0.0))
    cached = generate_images(model, proc, PROMPTS, **kw)
    plain = generate_images(model, proc, PROMPTS, no_cache=True, **kw)
    assert cached.shape == (3, proc.cfg.image_tokens)
    assert torch.equal(cached, plain)
    assert int(cached.min()) >= 0 and int(cached.max()) < proc.cfg.codebook_size


def test_greedy_answers_and_edits_identical_with_and_without_kv_cache():
    model, proc = micro_model()
    images = [scene_image(0), None]
    questions = ["how many circles are there?", "hi"]
    assert answer(model, proc, images, questions, 6) == answer(
        model, proc, images, questions, 6, no_cache=True
    )
    ims = [scene_image(1), scene_image(2)]
    edits = ["remove the blue square", "make it red"]
    guided = SamplingParams(cfg_scale=1.5, temperature=0.0)
    a = edit_images(model, proc, ims, edits, [0, 1], guided)
    b = edit_images(model, proc, ims, edits, [0, 1], guided, no_cache=True)
    assert torch.equal(a, b) and a.shape == (2, proc.cfg.image_tokens)


def test_cfg_scale_one_equals_conditional_sampling():
    model, proc = micro_model()
    model.double()  # float64 keeps uncond + 1 * (cond - uncond) equal to cond for the sampler
    guided = generate_images(model, proc, PROMPTS, [5, 6, 7], SamplingParams(cfg_scale=1.0))
    plain = generate_images(model, proc, PROMPTS, [5, 6, 7], SamplingParams(cfg_scale=None))
    assert torch.equal(guided, plain)
    assert not torch.equal(
        guided, generate_images(model, proc, PROMPTS, [5, 6, 7], SamplingParams(cfg_scale=4.0))
    )


def test_same_seed_same_codes_whatever_the_batch():
    model, proc = micro_model()
    together = generate_images(model, proc, PROMPTS, [11, 12, 13])
    alone = generate_images(model, proc, PROMPTS[1:2], [12])
    assert torch.equal(together[1], alone[0])
    assert not torch.equal(alone, generate_images(model, proc, PROMPTS[1:2], [99]))


def test_top_k_one_and_tiny_top_p_are_greedy():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    greedy = sample_logits(logits, None, SamplingParams(temperature=0.0))
    assert torch.equal(sample_logits(logits, gens, SamplingParams(top_k=1)), greedy)
    assert torch.equal(sample_logits(logits, gens, SamplingParams(top_p=1e-6)), greedy)
    top3 = logits.topk(3, -1).indices
    picks = torch.stack(
        [sample_logits(logits, gens, SamplingParams(top_k=3)) for _ in range(20)], 1
    )  # (4, 20)
    assert all(set(p.tolist()) <= set(t.tolist()) for p, t in zip(picks, top3, strict=True))


def test_sampling_params_refuse_settings_that_mean_nothing():
    for bad in ({"temperature": -0.1}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}, {"cfg": 2.0}):
        with pytest.raises(ValidationError):
            SamplingParams(**bad)


def test_nucleus_keeps_the_same_tokens_as_a_full_sort():
    """The top-k shortcut of top-p drops exactly what ranking the whole vocabulary drops, also for
    a row whose nucleus reaches past the shortcut's head."""
    from illume_core.model.sampling import _nucleus

    torch.manual_seed(0)
    sharp = torch.randn(3, 5000) * 4  # nuclei of a few tokens
    flat = torch.randn(2, 5000) * 0.01  # nuclei of thousands: past the head
    for logits in (sharp, flat, torch.cat([sharp, flat])):
        for top_p in (0.3, 0.8, 0.95):
            probs = logits.softmax(-1)
            ranked, order = probs.sort(-1, descending=True)
            keep_ranked = (ranked.cumsum(-1) - ranked) <= top_p
            want = torch.zeros_like(keep_ranked).scatter(-1, order, keep_ranked)
            got = torch.isfinite(_nucleus(logits, top_p))
            assert torch.equal(got, want)
    assert int(torch.isfinite(_nucleus(flat, 0.8)).sum(-1).min()) > 256  # the full-sort branch ran
    # a row keeps the same tokens whether or not a row ranked in full shares its batch
    assert torch.equal(_nucleus(torch.cat([sharp, flat]), 0.8)[:3], _nucleus(sharp, 0.8))
    small = torch.randn(4, 100) * 3  # a vocabulary smaller than the head
    assert torch.isfinite(_nucleus(small, 0.5)).sum() < small.numel()


def test_mask_nucleus_keeps_an_object_whose_colour_the_prompt_leaves_open():
    """A cell where an object is likelier than background but its colour is open (one shape, ten
    colours, each 0.06): the code nucleus drops most of the object's codes and often draws
    background; the mask nucleus cuts over shapes (colours summed) and always draws the shape."""
    from illume_core.model.sampling import SamplingParams, sample_logits

    colours, masks = 10, 4
    probs = torch.full((masks, colours), 1e-9)
    probs[0, 0] = 0.4  # background (mask 0 has only colour 0)
    probs[2, :] = 0.06  # one shape, any colour
    logits = probs.flatten().log().expand(64, -1)  # (64 rows, M * C)
    gens = [torch.Generator().manual_seed(i) for i in range(64)]
    code = sample_logits(logits, gens, SamplingParams(top_p=0.5), colours)
    gens = [torch.Generator().manual_seed(i) for i in range(64)]
    mask = sample_logits(logits, gens, SamplingParams(top_p=0.5, nucleus="mask"), colours)
    assert set((mask // colours).tolist()) == {2}  # the shape, every time
    assert len(set((mask % colours).tolist())) > 5  # in colours from the whole open set
    assert (code // colours == 0).sum() > 32  # the code nucleus: background in most rows
    # without factorized codes (no colours given) "mask" falls back to the code nucleus
    gens = [torch.Generator().manual_seed(i) for i in range(64)]
    plain = sample_logits(logits, gens, SamplingParams(top_p=0.5, nucleus="mask"))
    assert torch.equal(plain, code)
