from illume_core.world.geneval import parse_line
from illume_core.world.rules import apply_rules, describe_counts
from illume_core.world.scenes import Obj


def meta(s):
    return parse_line(s)


POS = '{"tag": "position", "include": [{"class": "cross", "count": 1, "color": "yellow"}, {"class": "diamond", "count": 1, "color": "blue", "position": ["left of", 0]}], "prompt": "a photo of a blue diamond left of a yellow cross"}'
COUNT = '{"tag": "counting", "include": [{"class": "square", "count": 2}], "exclude": [{"class": "square", "count": 3}], "prompt": "a photo of two squares"}'
COLOR_ATTR = '{"tag": "color_attr", "include": [{"class": "circle", "count": 1, "color": "red"}, {"class": "square", "count": 1, "color": "blue"}], "prompt": "a photo of a red circle and a blue square"}'


def test_position_rule_pass_and_fail():
    cross = Obj("cross", "yellow", 40, 20, 12)
    left = Obj("diamond", "blue", 5, 22, 12)
    assert apply_rules(meta(POS), [cross, left]).correct
    right = Obj("diamond", "blue", 50, 2, 12)
    ev = apply_rules(meta(POS), [cross, right])
    assert not ev.correct and ev.dimensions["spatial"] is False and ev.dimensions["color"] is True
    assert "expected diamond left of target" in ev.reason


def test_counting_is_exact():
    sq = [Obj("square", "red", 2 + 15 * i, 2, 10) for i in range(4)]
    assert apply_rules(meta(COUNT), sq[:2]).correct
    ev3 = apply_rules(meta(COUNT), sq[:3])
    assert not ev3.correct and ev3.dimensions["count"] is False and "expected square<3, found 3" in ev3.reason
    ev1 = apply_rules(meta(COUNT), sq[:1])
    assert not ev1.correct and ev1.dimensions["count"] is False


def test_colour_and_missing_object():
    ok = [Obj("circle", "red", 2, 2, 10), Obj("square", "blue", 30, 30, 10)]
    assert apply_rules(meta(COLOR_ATTR), ok).correct
    wrong = [Obj("circle", "green", 2, 2, 10), Obj("square", "blue", 30, 30, 10)]
    ev = apply_rules(meta(COLOR_ATTR), wrong)
    assert not ev.correct and ev.dimensions == {
        "object": True,
        "count": True,
        "color": False,
        "spatial": True,
    }
    missing = [Obj("circle", "red", 2, 2, 10)]
    ev = apply_rules(meta(COLOR_ATTR), missing)
    assert ev.dimensions["object"] is False and "expected square>=1, found 0" in ev.reason
    # a distractor of the right class but the wrong colour does not hide the right one
    both = [
        Obj("circle", "green", 2, 2, 10),
        Obj("circle", "red", 20, 2, 10),
        Obj("square", "blue", 30, 30, 10),
    ]
    assert apply_rules(meta(COLOR_ATTR), both).correct


def test_describe_counts():
    objs = [Obj("cross", "red", 0, 0, 9), Obj("cross", "red", 20, 0, 9), Obj("square", "blue", 40, 40, 9)]
    assert describe_counts(objs) == "two red crosses and one blue square"
    assert describe_counts([]) == "nothing"
