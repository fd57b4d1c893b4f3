import random

import pytest

from illume_core.self_enhance.assessment import (
    DIMENSIONS,
    Assessment,
    DimensionAssessment,
    assessment_question,
    correction_turn,
    format_assessment,
    from_evaluation,
    parse_assessment,
)
from illume_core.world.geneval import parse_line
from illume_core.world.prompts import generate_prompts, kinds_for, scene_for, violate
from illume_core.world.rules import apply_rules
from illume_core.world.scenes import Obj

POS = parse_line(
    '{"tag": "position", "include": [{"class": "cross", "count": 1, "color": "yellow"}, '
    '{"class": "diamond", "count": 1, "color": "blue", "position": ["left of", 0]}], '
    '"prompt": "a photo of a blue diamond left of a yellow cross"}'
)
COUNT = parse_line(
    '{"tag": "counting", "include": [{"class": "square", "count": 3}], '
    '"exclude": [{"class": "square", "count": 4}], "prompt": "a photo of three squares"}'
)


def assess(meta, objs):
    return from_evaluation(meta, objs, apply_rules(meta, objs))


def test_reasons_name_what_the_scene_shows():
    cross = Obj("cross", "yellow", 40, 20, 12)
    ok = assess(POS, [cross, Obj("diamond", "blue", 5, 22, 12)])
    assert ok.all_yes
    assert format_assessment(ok) == (
        "object: yes, a yellow cross and a blue diamond; count: yes; color: yes; spatial: yes"
    )
    red = assess(POS, [cross, Obj("diamond", "red", 5, 22, 12)])
    assert red.color == DimensionAssessment(verdict="no", reason="the diamond is red")
    assert not red.all_yes and red.verdicts == {
        "object": True,
        "count": True,
        "color": False,
        "spatial": True,
    }
    right = assess(POS, [cross, Obj("diamond", "blue", 52, 22, 12)])
    assert right.spatial.verdict == "no" and right.spatial.reason == "the diamond is right of the cross"
    squares = [Obj("square", "red", 2 + 15 * i, 2, 10) for i in range(4)]
    assert assess(COUNT, squares[:3]).count.reason == "three squares"
    assert assess(COUNT, squares[:2]).count.reason == "two squares instead of three"
    assert assess(COUNT, squares).count.reason == "four squares instead of three"
    assert assess(COUNT, []).count.reason == "no squares instead of three"
    missing = assess(POS, [cross])
    assert missing.object == DimensionAssessment(verdict="no", reason="no diamond")


def test_labels_match_rules_and_stay_short():
    rng = random.Random(0)
    longest = 0
    for m in generate_prompts(5, 10):
        scenes = [scene_for(m, rng)] + [violate(m, rng, 64, k) for k in kinds_for(m)]
        for s in scenes:
            ev = apply_rules(m, s.objects)
            a = from_evaluation(m, s.objects, ev)
            assert a.verdicts == ev.dimensions and a.all_yes == ev.correct
            text = format_assessment(a)
            longest = max(longest, len(text.split()))
            parsed = parse_assessment(text)
            assert parsed.status == "ok" and parsed.assessment == a
    assert longest <= 30  # words; a BPE trained on this corpus spends about one token per word


def test_parser_is_tolerant():
    p = parse_assessment('  OBJECT : Yes , a red circle\nColour=no, "it is blue"\ncount: YES; Spatial: no')
    assert p.status == "ok" and p.error is None
    assert p.assessment.color == DimensionAssessment(verdict="no", reason="it is blue")
    assert p.assessment.object.reason == "a red circle" and p.assessment.spatial.verdict == "no"
    js = parse_assessment('{"object": "yes", "count": "no", "color": "yes", "spatial": "yes"}')
    assert js.status == "ok" and js.assessment.count.verdict == "no"
    first_wins = parse_assessment("object: no; object: yes; count: yes; color: yes; spatial: yes")
    assert first_wins.assessment.object.verdict == "no"


@pytest.mark.parametrize(
    "text",
    [None, "", "   ", "garbage", "object: maybe", "ßø∂ƒ 🙂 object::", 12, b"object: yes", ["x"], "{" * 10000],
)
def test_parser_never_raises_and_fails_cleanly(text):
    p = parse_assessment(text)
    assert p.status == "failed" and p.assessment is None and p.dimensions == {} and p.error


def test_parser_partial_and_huge():
    p = parse_assessment("object: yes, a circle; color: no")
    assert p.status == "partial" and set(p.dimensions) == {"object", "color"}
    assert p.assessment is None and "count" in p.error and "spatial" in p.error
    huge = "object: yes; count: yes; color: yes; spatial: yes; " + "blah " * 200_000
    h = parse_assessment(huge)
    assert h.status == "ok" and len(h.raw) <= 4096
    late = "x" * 5000 + "object: yes; count: yes; color: yes; spatial: yes"
    assert parse_assessment(late).status == "failed"


def test_conversation_turns():
    q = assessment_question(POS.prompt)
    assert POS.prompt in q and all(d in q for d in DIMENSIONS)
    assert correction_turn(POS) == f"the image is wrong; draw it again correctly: {POS.prompt}"
    a = Assessment(**{d: DimensionAssessment(verdict="yes") for d in DIMENSIONS})
    assert format_assessment(a) == "object: yes; count: yes; color: yes; spatial: yes"
