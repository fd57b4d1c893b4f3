import random
from pathlib import Path

import pytest

from illume_core.world.geneval import TAGS, iter_metadata, parse_line, read_metadata
from illume_core.world.prompts import (
    KIND_DIMENSION,
    Holdout,
    all_prompts,
    article,
    generate_prompts,
    in_reading_order,
    kinds_for,
    named_order,
    scene_for,
    violate,
)
from illume_core.world.rules import apply_rules
from illume_core.world.scenes import SHAPES, Obj, first_cell, relation

GENEVAL_FILE = Path("/work/shared/geneval/evaluation_metadata.jsonl")


def by_prompt(tag):
    return {m.prompt: m for m in all_prompts(tag)}


def test_grammar_matches_geneval_layout():
    assert by_prompt("single_object")["a photo of a circle"].dump() == {
        "tag": "single_object",
        "include": [{"class": "circle", "count": 1}],
        "prompt": "a photo of a circle",
    }
    assert by_prompt("two_object")["a photo of a circle and a square"].dump()["include"] == [
        {"class": "circle", "count": 1},
        {"class": "square", "count": 1},
    ]
    c = by_prompt("counting")["a photo of three squares"].dump()
    assert c["include"] == [{"class": "square", "count": 3}] and c["exclude"] == [
        {"class": "square", "count": 4}
    ]
    assert "a photo of four crosses" in by_prompt("counting")
    assert by_prompt("colors")["a photo of an orange circle"].dump()["include"] == [
        {"class": "circle", "count": 1, "color": "orange"}
    ]
    pos = by_prompt("position")["a photo of a blue diamond left of a yellow cross"]
    assert pos.dumps() == (
        '{"tag": "position", "include": [{"class": "cross", "count": 1, "color": "yellow"}, '
        '{"class": "diamond", "count": 1, "color": "blue", "position": ["left of", 0]}], '
        '"prompt": "a photo of a blue diamond left of a yellow cross"}'
    )
    ca = by_prompt("color_attr")["a photo of a red circle and a blue square"].dump()
    assert ca["include"] == [
        {"class": "circle", "count": 1, "color": "red"},
        {"class": "square", "count": 1, "color": "blue"},
    ]
    assert article("orange circle") == "an" and article("red circle") == "a"


@pytest.mark.parametrize("tag", TAGS)
def test_space_round_trips_and_pairs_differ(tag):
    space = all_prompts(tag)
    assert len({m.prompt for m in space}) == len(space)
    for m in space[:: max(1, len(space) // 200)]:
        assert parse_line(m.dumps()) == m
        classes = [c.cls for c in m.include]
        assert len(set(classes)) == len(classes)
        assert not m.out_of_vocabulary()


def test_generate_is_deterministic_unique_and_covers_tags():
    a, b = generate_prompts(3, 12), generate_prompts(3, 12)
    assert [m.dumps() for m in a] == [m.dumps() for m in b]
    assert [m.dumps() for m in a] != [m.dumps() for m in generate_prompts(4, 12)]
    for tag in TAGS:
        ps = [m.prompt for m in a if m.tag == tag]
        assert len(ps) == 12
        # single_object has only five prompts: it repeats, the others must not
        assert len(set(ps)) == min(12, len(all_prompts(tag)))


def test_holdout_split_is_disjoint_and_complete():
    h = Holdout.default()
    train = generate_prompts(0, 3000, h, "train")
    held = generate_prompts(0, 3000, h, "heldout")
    assert held and not any(h.is_heldout(m) for m in train)
    assert all(h.is_heldout(m) for m in held)
    assert not {m.prompt for m in train} & {m.prompt for m in held}
    assert {m.tag for m in held} == {"two_object", "colors", "position", "color_attr"}
    colors = [m for m in held if m.tag == "colors"]
    assert {m.prompt for m in colors} == {
        "a photo of a red circle",
        "a photo of a blue square",
        "a photo of a green triangle",
        "a photo of a yellow diamond",
    }


def test_holdout_parse():
    h = Holdout.parse(["color_shape:red/circle", "shape_pair:square/circle", "relation:left of"])
    assert h.color_shapes == {("red", "circle")} and h.shape_pairs == {("circle", "square")}
    assert Holdout.parse(h.specs()) == h
    t = Holdout.parse(["relation:diamond/left of/cross"])
    pos = by_prompt("position")
    assert t.is_heldout(pos["a photo of a blue diamond left of a yellow cross"])
    assert not t.is_heldout(pos["a photo of a blue cross left of a yellow diamond"])
    assert h.is_heldout(pos["a photo of a blue diamond left of a yellow cross"])
    for bad in [
        "colour:red/circle",
        "color_shape:red",
        "color_shape:teal/circle",
        "relation:near",
        "nothing",
    ]:
        with pytest.raises(ValueError, match="bad holdout"):
            Holdout.parse([bad])


def test_real_geneval_file_parses_and_reports_out_of_vocabulary():
    items = list(iter_metadata(GENEVAL_FILE))
    assert len(items) == 553
    metas = read_metadata(GENEVAL_FILE)
    assert len(metas) == 553
    oov = [m for m in metas if m.out_of_vocabulary()]
    assert len(oov) == 553  # GenEval names COCO classes, none of which is a ShapesWorld shape
    bench = next(m for m in metas if m.prompt == "a photo of a bench")
    assert bench.out_of_vocabulary() == ["class 'bench'"]
    with pytest.raises(ValueError, match="cannot draw"):
        scene_for(bench, random.Random(0))


@pytest.mark.parametrize("size", [32, 64])
def test_scene_for_is_correct(size):
    rng = random.Random(size)
    metas = generate_prompts(1, 25)
    n_distracted = 0
    for m in metas:
        for _ in range(4):
            s = scene_for(m, rng, size)
            assert apply_rules(m, s.objects).correct, (m.prompt, s)
            if m.tag == "counting":
                assert s.count(m.include[0].cls) == m.include[0].count
            n_distracted += len(s.objects) > sum(c.count for c in m.include)
            if m.tag == "position":
                subj, target = s.objects[1], s.objects[0]
                assert m.include[1].position[0] in relation(subj.box, target.box)
    assert n_distracted > 0
    plain = scene_for(metas[0], rng, size, distractors=False)
    assert len(plain.objects) == sum(c.count for c in metas[0].include)


def test_first_cell_is_where_a_row_by_row_drawer_starts_the_object():
    # a 16-px square at (20, 9): its first pixels lie in cell row 1 (y 8-15), column 2 (x 16-23)
    assert first_cell(Obj("square", "red", 20, 9, 16), 64, 8) == (1, 2)
    # a diamond's top vertex is one pixel wide: the first cell it covers with 4 px is lower than its box
    d = Obj("diamond", "red", 16, 7, 20)  # its top vertex is the one pixel of cell row 0 (y 7)
    assert first_cell(d, 64, 8, min_px=1) == (0, 3)
    assert first_cell(d, 64, 8) == (1, 2)
    # an object too small for min_px still has a first cell
    assert first_cell(Obj("triangle", "red", 0, 0, 3), 64, 8, min_px=64) == (0, 0)
    with pytest.raises(ValueError, match="multiple of the cell"):
        first_cell(d, 64, 7)


def test_named_order_follows_the_prompt_and_below_reverses_it():
    by = {m.tag: m for m in generate_prompts(3, 10) if m.tag != "position"}
    assert named_order(by["color_attr"]) == named_order(by["two_object"]) == (0, 1)
    assert (
        named_order(by["counting"]) is named_order(by["single_object"]) is named_order(by["colors"]) is None
    )
    pos = {m.include[1].position[0]: m for m in all_prompts("position")}
    # the subject first
    assert named_order(pos["left of"]) == named_order(pos["right of"]) == named_order(pos["above"]) == (1, 0)
    assert named_order(pos["below"]) == (0, 1)  # the target, which lies above it


def test_scene_for_in_reading_order_starts_the_named_objects_in_prompt_order():
    metas = [m for m in generate_prompts(5, 40) if m.tag in ("two_object", "color_attr", "position")]
    rng = random.Random(7)
    plain = [in_reading_order(m, scene_for(m, rng, 64), 8) for m in metas]
    assert 0.2 < sum(plain) / len(plain) < 0.9  # without the option, either order occurs
    for m in metas:
        s = scene_for(m, rng, 64, order_cell=8)
        assert apply_rules(m, s.objects).correct and in_reading_order(m, s, 8), m.prompt
        # read from the prompt's words, not from named_order: the object named first starts first
        # ("below" excepted: its subject lies under its target)
        named = sorted(
            s.objects[:2],
            key=lambda o: m.prompt.index(f"{o.color} {o.shape}" if o.color in m.prompt else o.shape),
        )
        if m.tag == "position" and " below " in m.prompt:
            named.reverse()
        assert first_cell(named[0], 64, 8) < first_cell(named[1], 64, 8), m.prompt
    # the other tags are drawn exactly as without the option (same draws of the generator)
    for m in [m for m in generate_prompts(5, 5) if named_order(m) is None]:
        assert scene_for(m, random.Random(1), 64, order_cell=8) == scene_for(m, random.Random(1), 64)


def test_violate_fails_exactly_the_intended_dimension():
    rng = random.Random(7)
    seen = set()
    for m in generate_prompts(2, 12):
        kinds = kinds_for(m)
        assert kinds
        for kind in kinds:
            for _ in range(3):
                s = violate(m, rng, 64, kind)
                ev = apply_rules(m, s.objects)
                assert not ev.correct
                assert [d for d, ok in ev.dimensions.items() if not ok] == [KIND_DIMENSION[kind]]
                seen.add((m.tag, kind))
    assert ("counting", "count") in seen and ("position", "relation") in seen
    assert ("color_attr", "color") in seen and ("two_object", "shape") in seen
    counting = by_prompt("counting")["a photo of three squares"]
    counts = {violate(counting, rng, 64, "count").count("square") for _ in range(30)}
    assert counts == {2, 4}
    with pytest.raises(ValueError, match="does not apply"):
        violate(by_prompt("single_object")["a photo of a circle"], rng, 64, "relation")
    assert set(kinds_for(by_prompt("single_object")["a photo of a circle"])) == {"shape"}
    assert all(s in SHAPES for s in (o.shape for o in violate(counting, rng).objects))
