"""The assessment grammar: it accepts the training format, forbids wrong keys and never dead-ends;
decoding under it gives answers the parser reads in full, even from an untrained model."""

from __future__ import annotations

import random

import pytest
import torch
from model_helpers import micro_model, scene_image, text_tokenizer

from illume_core.model.sampling import answer
from illume_core.self_enhance.assessment import (
    Assessment,
    DimensionAssessment,
    assessment_question,
    format_assessment,
    parse_assessment,
)
from illume_core.self_enhance.constrained import DONE, AssessmentGrammar

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def grammar() -> AssessmentGrammar:
    return AssessmentGrammar(text_tokenizer(), max_reason_chars=40)


def _walk(g: AssessmentGrammar, ids: list[int]):
    st = g.start()
    for i in ids:
        if not bool(g.allowed(st)[i]):
            return None
        st = g.advance(st, i)
    return st


def test_training_format_is_accepted_token_by_token(grammar):
    tok = text_tokenizer()
    a = Assessment(
        object=DimensionAssessment(verdict="yes", reason="a blue diamond and a yellow cross"),
        count=DimensionAssessment(verdict="yes"),
        color=DimensionAssessment(verdict="no", reason="the diamond is red"),
        spatial=DimensionAssessment(verdict="no", reason="the cross is left of the diamond"),
    )
    st = _walk(grammar, tok.encode(format_assessment(a)))
    assert st is not None and grammar.accepting(st)
    assert grammar.advance(st, tok.eos_id) == DONE
    # every prefix before the last verdict is not a whole answer: <eos> is masked there
    half = tok.encode("object: yes; count: no")
    st = _walk(grammar, half)
    assert st is not None and not grammar.accepting(st) and not bool(grammar.allowed(st)[tok.eos_id])


@pytest.mark.parametrize(
    "text",
    [
        "object: yes; color: yes",  # a key out of order (the experiment's base model wrote this)
        "object: maybe",  # a verdict that is not yes/no
        "count: yes",  # the wrong first key
        "object: yes, it has count: no",  # a key inside a reason would fool the parser
        "object: yes; count: no; color: yes; spatial: yes; object: no",  # past the last key
    ],
)
def test_malformed_answers_are_masked(grammar, text):
    assert _walk(grammar, text_tokenizer().encode(text)) is None


def test_random_walks_under_the_mask_always_parse(grammar):
    tok = text_tokenizer()
    rng = random.Random(0)
    finished = 0
    for _ in range(100):
        st, out = grammar.start(), []
        for _ in range(400):
            allowed = grammar.allowed(st).nonzero().flatten().tolist()
            assert allowed, f"dead end in state {st}"
            i = rng.choice(allowed)
            st = grammar.advance(st, i)
            assert st is not None
            if st == DONE:
                break
            out.append(i)
        if st == DONE:
            finished += 1
            parsed = parse_assessment(tok.decode(out))
            assert parsed.status == "ok", (tok.decode(out), parsed.error)
    assert finished > 50


def test_untrained_model_answers_parse_under_the_grammar_and_not_without():
    model, proc = micro_model()
    g = AssessmentGrammar(proc.tokenizer, max_reason_chars=8)
    images = [scene_image(i) for i in range(4)]
    questions = [assessment_question("two red circles")] * 4
    free = answer(model, proc, images, questions, max_new_tokens=80)
    forced = answer(model, proc, images, questions, max_new_tokens=80, grammar=g)
    assert all(parse_assessment(t).status == "ok" for t in forced), forced
    assert not any(parse_assessment(t).status == "ok" for t in free), free
    # with the cache and without, the same constrained answers
    assert forced == answer(model, proc, images, questions, max_new_tokens=80, grammar=g, no_cache=True)


def test_too_few_tokens_leave_a_partial_answer_not_an_error():
    model, proc = micro_model()
    g = AssessmentGrammar(proc.tokenizer, max_reason_chars=8)
    (text,) = answer(model, proc, [scene_image(0)], [assessment_question("a red circle")], 6, grammar=g)
    assert parse_assessment(text).status in ("partial", "failed")


def test_bad_reason_length_is_refused():
    with pytest.raises(ValueError, match="max_reason_chars"):
        AssessmentGrammar(text_tokenizer(), max_reason_chars=0)


def test_an_answer_that_fits_at_its_start_is_never_cut():
    # an untrained model rambles in its reasons; near the token limit the grammar makes it close
    # them, so the whole answer fits in cost(start) tokens, the least that is always enough
    model, proc = micro_model()
    g = AssessmentGrammar(proc.tokenizer)  # reasons up to 64 characters
    images = [scene_image(i) for i in range(4)]
    questions = [assessment_question("two red circles left of a blue square")] * 4
    texts = answer(model, proc, images, questions, max_new_tokens=g.cost(g.start()), grammar=g)
    assert all(parse_assessment(t).status == "ok" for t in texts), texts
    assert any(parse_assessment(t).assessment.object.reason for t in texts)  # reasons were allowed
