"""DPO on accepted / rejected image pairs: the loss moves the policy's log-likelihood ratio the
right way against the frozen reference, and starts at log 2 when policy and reference agree."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from test_pattern_tokenizer import _tokenizer_model

from illume_core.train.preference import PreferencePair, dpo_loss, pair_batches, sequence_logprobs

torch.set_num_threads(1)


def test_label_logprobs_sum_to_the_loss():
    model, proc = _tokenizer_model()
    batch = proc.collate([proc.text_to_image("a red circle", torch.randint(0, 640, (16,)))])
    lp = model.label_logprobs(batch)
    n = int((batch.labels[:, 1:] != -100).sum())
    torch.testing.assert_close(-lp.sum() / n, model(batch).loss)


def test_dpo_raises_the_chosen_image_over_the_rejected_one():
    policy, proc = _tokenizer_model(seed=1)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    pairs = [
        PreferencePair(
            p, torch.randint(0, 640, (16,), generator=g), torch.randint(0, 640, (16,), generator=g)
        )
        for p in ("a red circle", "two blue squares", "a green cross left of a pink diamond")
    ]
    chosen, rejected = pair_batches(proc, pairs)
    loss, margin = dpo_loss(policy, reference, chosen, rejected, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)  # identical models: margin 0
    assert torch.allclose(margin, torch.zeros(3), atol=1e-4)
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3, weight_decay=0.0)
    policy.train()
    for _ in range(15):
        loss, margin = dpo_loss(policy, reference, chosen, rejected, beta=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (margin > 0).all() and loss.item() < math.log(2)
    # the chosen sequences gained likelihood relative to the rejected ones
    with torch.no_grad():
        gain_c = sequence_logprobs(policy, chosen) - sequence_logprobs(reference, chosen)
        gain_r = sequence_logprobs(policy, rejected) - sequence_logprobs(reference, rejected)
    assert (gain_c > gain_r).all()
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(policy, reference, chosen, rejected, beta=0.0)


def test_round_preference_rows_become_pairs_and_join_the_stage_loss():
    import json

    from illume_core.self_enhance.reformat import resolve, resolve_preferences
    from illume_core.train.recipes import get_recipe
    from illume_core.train.stages import Parts, _loss_fn

    model, proc = _tokenizer_model(seed=2)
    good, bad = torch.randint(0, 640, (16,)), torch.randint(0, 640, (16,))
    samples = {"g": {"image_tokens": good.tolist()}, "b": {"image_tokens": bad.tolist()}}
    row = {
        "strategy": "preference",
        "conversation": json.dumps(
            [
                {"role": "user", "content": "a photo of a red circle"},
                {"role": "assistant", "content": "<image:0>", "rejected": "<image:1>"},
            ]
        ),
        "image_refs": ["g", "b"],
    }
    assert resolve([row], samples) == []  # not a supervised example
    (pair,) = resolve_preferences([row], samples)
    assert pair.prompt == "a photo of a red circle"
    assert torch.equal(pair.chosen, good) and torch.equal(pair.rejected, bad)
    parts = Parts(model, None, proc.tokenizer, proc)
    recipe = get_recipe("stage3", "tiny", steps=2, batch_size=8)
    assert recipe.preference_weight > 0
    batch = proc.collate([proc.text_to_image("two blue squares", torch.randint(0, 640, (16,)))])
    plain = _loss_fn(parts, recipe, [], 0, torch.device("cpu"))(model, batch)
    with_dpo = _loss_fn(parts, recipe, [pair], 0, torch.device("cpu"))(model, batch)
    # at the stage's start the policy is its reference: DPO adds log 2 times the weight
    assert with_dpo.item() == pytest.approx(plain.item() + recipe.preference_weight * math.log(2), abs=1e-4)
    off = recipe.model_copy(update={"preference_weight": 0.0})
    assert _loss_fn(parts, off, [pair], 0, torch.device("cpu"))(model, batch).item() == pytest.approx(
        plain.item()
    )
