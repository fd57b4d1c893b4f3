import random

import pytest

from illume_core.self_enhance.assessment import format_assessment, from_evaluation, parse_assessment
from illume_core.world.corpus import (
    EDIT_KINDS,
    assessment_example,
    caption,
    captions,
    edit_pair,
    inventory,
    text_corpus,
    vqa_pairs,
)
from illume_core.world.geneval import TAGS
from illume_core.world.prompts import Holdout
from illume_core.world.rules import apply_rules
from illume_core.world.scenes import COLORS, NUMBERS, SHAPES, Obj, Scene, min_gap, relation, sample_scene

WORD_TO_N = {"zero": 0, **{w: n for n, w in NUMBERS.items()}}


def two_scene():
    return Scene(64, (Obj("circle", "red", 4, 20, 12), Obj("square", "blue", 40, 22, 12)))


def test_captions_describe_the_scene():
    s = Scene(
        64,
        (Obj("circle", "red", 2, 2, 10), Obj("square", "blue", 30, 2, 10), Obj("square", "blue", 30, 30, 10)),
    )
    assert inventory(s) == "a red circle and two blue squares"
    caps = captions(s)
    assert "there is a red circle and two blue squares" in caps
    assert "three objects: a red circle and two blue squares" in caps
    two = captions(two_scene())
    assert "a red circle left of a blue square" in two and "a blue square right of a red circle" in two
    assert captions(Scene(64, (Obj("cross", "orange", 2, 2, 10),)))[0] == "an orange cross"
    assert caption(s, random.Random(0)) in caps


def test_vqa_answers_are_true():
    rng = random.Random(1)
    yes = no = 0
    kinds = set()
    for _ in range(150):
        s = sample_scene(rng, 64)
        for qa in vqa_pairs(s, rng):
            kinds.add(qa.kind)
            q = qa.question
            if qa.kind == "how_many":
                plural = q.removeprefix("how many ").removesuffix("?")
                shape = next(k for k, v in SHAPES.items() if v == plural)
                assert WORD_TO_N[qa.answer] == s.count(shape)
            elif qa.kind == "what_color":
                shape = q.removeprefix("what color is the ").removesuffix("?")
                assert s.count(shape) == 1 and s.count(shape, qa.answer) == 1
            elif qa.kind == "where":
                a, b = q.removeprefix("where is the ").removesuffix("?").split(" relative to the ")
                oa = next(o for o in s.objects if o.shape == a)
                ob = next(o for o in s.objects if o.shape == b)
                assert set(qa.answer.split(" and ")) == relation(oa.box, ob.box)
            else:
                words = q.removeprefix("is there ").removesuffix("?").split()
                color, shape = words[-2], words[-1]
                assert (s.count(shape, color) > 0) == (qa.answer == "yes")
                yes += qa.answer == "yes"
                no += qa.answer == "no"
    assert kinds == {"how_many", "what_color", "where", "is_there"}
    assert yes == no


def check_contract(scene):
    assert 1 <= len(scene.objects) <= 4
    for i, a in enumerate(scene.objects):
        x0, y0, x1, y1 = a.box
        assert 0 <= x0 and 0 <= y0 and x1 <= scene.size and y1 <= scene.size
        for b in scene.objects[i + 1 :]:
            g = min_gap(scene.size)
            assert (
                a.box[2] + g <= b.box[0]
                or b.box[2] + g <= a.box[0]
                or a.box[3] + g <= b.box[1]
                or b.box[3] + g <= a.box[1]
            )


@pytest.mark.parametrize("kind", EDIT_KINDS)
def test_edit_pairs_do_exactly_what_they_say(kind):
    rng = random.Random(EDIT_KINDS.index(kind))
    for _ in range(40):
        e = edit_pair(None, rng, 64, kind)
        src, tgt, words = list(e.source.objects), list(e.target.objects), e.instruction.split()
        assert e.kind == kind
        check_contract(e.source)
        check_contract(e.target)
        if kind == "remove":
            assert len(tgt) == len(src) - 1 and all(o in src for o in tgt)
            (gone,) = [o for o in src if o not in tgt]
            assert words[-1] == gone.shape and (words[-2] in ("the", gone.color))
        elif kind == "add":
            assert tgt[: len(src)] == src and len(tgt) == len(src) + 1
            assert e.instruction.endswith(f"{tgt[-1].color} {tgt[-1].shape}")
        elif kind == "recolor":
            changed = [(a, b) for a, b in zip(src, tgt, strict=True) if a != b]
            ((a, b),) = changed
            assert (a.shape, a.x, a.y, a.s) == (b.shape, b.x, b.y, b.s)
            assert e.instruction == f"make the {a.color} {a.shape} {b.color}" and a.color != b.color
        else:
            changed = [(a, b) for a, b in zip(src, tgt, strict=True) if a != b]
            ((a, b),) = changed
            assert (a.shape, a.color, a.s) == (b.shape, b.color, b.s) and a.shape in e.instruction
            dx, dy = b.x - a.x, b.y - a.y
            direction = {
                "left": dx < 0 == dy,
                "right": dx > 0 == dy,
                "up": dy < 0 == dx,
                "down": dy > 0 == dx,
            }
            assert direction[words[-1]]
    with pytest.raises(ValueError, match="unknown edit kind"):
        edit_pair(None, rng, 64, "rotate")
    with pytest.raises(RuntimeError, match="no remove"):
        edit_pair(Scene(64, (Obj("circle", "red", 2, 2, 10),)), rng, 64, "remove")


def test_assessment_examples_are_labelled_from_the_scene():
    rng = random.Random(3)
    n_correct = 0
    tags = set()
    for _ in range(120):
        ex = assessment_example(rng, 64)
        tags.add(ex.meta.tag)
        ev = apply_rules(ex.meta, ex.scene.objects)
        assert ev.correct == ex.evaluation.correct and ev.dimensions == ex.assessment.verdicts
        assert ex.assessment == from_evaluation(ex.meta, ex.scene.objects, ev)
        assert parse_assessment(ex.answer).assessment == ex.assessment
        assert ex.answer == format_assessment(ex.assessment) and ex.meta.prompt in ex.question
        n_correct += ev.correct
    assert set(TAGS) == tags and 35 <= n_correct <= 85
    assert all(assessment_example(rng, 64, "counting", p_correct=1.0).evaluation.correct for _ in range(10))
    assert not any(
        assessment_example(rng, 64, "position", p_correct=0.0).evaluation.correct for _ in range(10)
    )
    h = Holdout.default()
    for _ in range(10):
        assert h.is_heldout(assessment_example(rng, 64, "colors", holdout=h, split="heldout").meta)


def test_text_corpus_is_deterministic_and_covers_all_kinds():
    a = list(text_corpus(0, 400))
    assert a == list(text_corpus(0, 400)) and a != list(text_corpus(1, 400))
    assert len(a) == 400 and all(isinstance(t, str) and t for t in a)
    joined = "\n".join(a)
    for marker in ["a photo of", "how many", "does the image match", "object: ", "draw it again"]:
        assert marker in joined
    assert any(t.startswith(("remove ", "make ", "add ", "move ")) for t in a)
    assert all(c in joined for c in COLORS)
