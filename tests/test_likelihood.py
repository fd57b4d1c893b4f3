"""Self-assessment by likelihood (illume_core/self_enhance/likelihood.py): counterfactual prompts that break
exactly the dimension they are filed under, and the verdict rule over the model's likelihoods."""

from __future__ import annotations

import random

import pytest
import torch
from test_pattern_tokenizer import _tokenizer_model

from illume_core.self_enhance.likelihood import (
    LikelihoodMargins,
    assess_by_likelihood,
    code_loglik,
    counterfactuals,
)
from illume_core.world.prompts import TAGS, all_prompts, generate_prompts, scene_for
from illume_core.world.rules import DIMENSIONS, apply_rules


@pytest.mark.parametrize("tag", TAGS)
def test_a_drawing_of_a_counterfactual_fails_the_prompt_on_the_dimension_it_is_filed_under(tag):
    """The judge's rules agree: drawn correctly for counterfactual cf (dimension d), a scene
    violates the original prompt on d. So a drawing that the model explains better as cf is
    evidence against d, never against another dimension."""
    rng = random.Random(0)
    for meta in generate_prompts(seed=3, per_tag=6)[TAGS.index(tag) * 6 : TAGS.index(tag) * 6 + 6]:
        assert meta.tag == tag
        cfs = counterfactuals(meta)
        assert set(cfs) == set(DIMENSIONS) and any(cfs.values())
        for d, metas in cfs.items():
            for cf in metas:
                assert cf.prompt != meta.prompt
                scene = scene_for(cf, rng, distractors=False)
                ev = apply_rules(meta, scene.objects)
                assert not ev.dimensions[d], (meta.prompt, d, cf.prompt, ev.dimensions)


def test_every_prompt_of_every_tag_has_counterfactuals():
    for tag in TAGS:
        for meta in all_prompts(tag)[:50]:
            assert sum(len(v) for v in counterfactuals(meta).values()) >= 4


class _PrefersRed(torch.nn.Module):
    """A stand-in model whose likelihood of any drawing is higher under prompts saying 'red'."""

    def __init__(self, tokenizer, bonus: float) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.tokenizer, self.bonus = tokenizer, bonus

    def label_logprobs(self, batch) -> torch.Tensor:
        text = [
            self.tokenizer.decode([int(t) for t in row if int(t) < self.tokenizer.vocab_size])
            for row in batch.input_ids
        ]
        red = torch.tensor([" red " in f" {t} " for t in text])
        out = torch.full(batch.labels[:, 1:].shape, -1.0)
        out[:, 0] += red.float() * self.bonus
        return out


def test_a_dimension_is_no_when_a_counterfactual_explains_the_drawing_better_than_the_margin():
    _, proc = _tokenizer_model()
    metas = [m for m in all_prompts("colors") if m.include[0].color in ("blue", "red")][:2]
    blue = next(m for m in metas if m.include[0].color == "blue")
    red = next(m for m in metas if m.include[0].color == "red")
    codes = torch.zeros(2, 16, dtype=torch.long)
    model = _PrefersRed(proc.tokenizer, bonus=3.0)
    zero = LikelihoodMargins(object=0.0, count=0.0, color=0.0, spatial=0.0)
    (a_blue, g_blue), (a_red, g_red) = assess_by_likelihood(model, proc, [blue, red], codes, zero)
    # asked blue, and "red" explains the drawing 3 nats better: colour says no, naming the prompt
    assert a_blue.color.verdict == "no" and "red" in a_blue.color.reason
    assert g_blue["color"] == pytest.approx(3.0)
    # asked red: every colour counterfactual is 3 nats worse; spatial has nothing to compare
    assert a_red.color.verdict == "yes" and g_red["color"] == pytest.approx(-3.0)
    assert a_blue.object.verdict == a_red.object.verdict == "yes"
    assert g_blue["spatial"] == float("-inf") and a_blue.spatial.verdict == "yes"
    # a margin above the gain keeps the verdict at yes
    (a_blue, _), _ = assess_by_likelihood(
        model, proc, [blue, red], codes, zero.model_copy(update={"color": 4.0})
    )
    assert a_blue.color.verdict == "yes"
    # a negative margin asks the prompt to win by more than that: 3 nats are not 4 (the defaults
    # are negative, chosen on tuning prompts)
    _, (a_red, _) = assess_by_likelihood(
        model, proc, [blue, red], codes, zero.model_copy(update={"color": -4.0})
    )
    assert LikelihoodMargins().color < 0
    assert a_red.color.verdict == "no"
    with pytest.raises(ValueError, match="2 prompts for 1 drawings"):
        assess_by_likelihood(model, proc, [blue, red], codes[:1])


def test_code_loglik_is_the_sum_of_the_image_tokens_log_probabilities():
    model, proc = _tokenizer_model()
    codes = torch.randint(0, 640, (3, 16))
    prompts = ["a red circle", "two blue squares", "a red circle"]
    ll = code_loglik(model, proc, prompts, codes, batch_size=2)
    one = [code_loglik(model, proc, [p], c[None])[0] for p, c in zip(prompts, codes, strict=True)]
    torch.testing.assert_close(ll, torch.stack(one))
    batch = proc.collate([proc.text_to_image(prompts[0], codes[0])])
    with torch.no_grad():
        direct = float(model.eval().label_logprobs(batch).sum())
    assert float(ll[0]) == pytest.approx(direct, rel=1e-5)
    assert (ll < 0).all()


def test_the_engine_assesses_drawings_by_likelihood_in_the_assessment_format(tmp_path):
    """`Engine.assess_likelihood` (what a round's `likelihood` assessor runs on its workers):
    rows in the assessment columns that parse, each depending only on its own drawing, with the
    verdicts of `assess_by_likelihood`."""
    from model_helpers import save_micro_checkpoint

    from illume_core.eval.evaluations import prompt_id
    from illume_core.model.engine import Engine

    save_micro_checkpoint(tmp_path / "ck")
    e = Engine(tmp_path / "ck")
    metas = generate_prompts(seed=5, per_tag=1)
    codes = torch.randint(
        0, e.cfg.codebook_size, (len(metas), e.cfg.image_tokens), generator=torch.Generator().manual_seed(0)
    )
    items = [
        {"prompt_id": prompt_id(m), "sample_index": 0, "prompt": m.prompt, "metadata": m.model_dump_json(),
         "image_tokens": c.tolist()}
        for m, c in zip(metas, codes, strict=True)
    ]  # fmt: skip
    rows = e.assess_likelihood(items, batch_size=4)
    direct = assess_by_likelihood(e.model, e.parts.processor, metas, codes)
    assert [r["prompt_id"] for r in rows] == [it["prompt_id"] for it in items]
    for r, (a, _) in zip(rows, direct, strict=True):
        assert r["parse_status"] == "ok" and "image_tokens" not in r and "metadata" not in r
        assert {d: r[f"{d}_verdict"] for d in DIMENSIONS} == {d: getattr(a, d).verdict for d in DIMENSIONS}
    assert e.assess_likelihood(items[3:4]) == rows[3:4]


def test_margins_parse_from_the_command_line_and_refuse_what_they_do_not_know():
    m = LikelihoodMargins.parse("object=0, spatial=2.5")
    assert (m.object, m.spatial) == (0.0, 2.5)
    assert (m.count, m.color) == (LikelihoodMargins().count, LikelihoodMargins().color)  # the defaults
    assert LikelihoodMargins.parse("") == LikelihoodMargins()
    for bad, says in (("shape=1", "object, count, color, spatial"), ("object", "DIMENSION=NATS"), ("count=x", "not a number")):
        with pytest.raises(ValueError, match=says):
            LikelihoodMargins.parse(bad)
