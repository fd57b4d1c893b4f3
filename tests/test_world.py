import random

import numpy as np
import pytest

from illume_core.world.scenes import (
    BACKGROUND,
    COLORS,
    MAX_FRAC,
    MIN_FRAC,
    SHAPES,
    Obj,
    Scene,
    check_canvas,
    fits,
    min_gap,
    place,
    place_more,
    relation,
    render,
    sample_scene,
)


@pytest.mark.parametrize("size", [32, 64, 100, 512])
def test_render_sizes_background_and_exact_centre_colours(size):
    rng = random.Random(size)
    for _ in range(5 if size < 512 else 2):
        scene = sample_scene(rng, size)
        img = np.asarray(render(scene))
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        for o in scene.objects:
            cx, cy = int(o.center[0]), int(o.center[1])
            assert tuple(img[cy, cx]) == COLORS[o.color]
        corners = [img[0, 0], img[0, -1], img[-1, 0], img[-1, -1]]
        drawn = np.zeros((size, size), bool)
        for o in scene.objects:
            drawn[o.y : o.y + o.s, o.x : o.x + o.s] = True
        assert (img[~drawn] == BACKGROUND).all()
        assert any(tuple(c) == BACKGROUND for c in corners)


def test_every_shape_and_colour_renders_inside_its_box():
    for shape in SHAPES:
        for color, rgb in COLORS.items():
            o = Obj(shape, color, 20, 20, 16)
            img = np.asarray(render(Scene(64, (o,))))
            mask = (img != BACKGROUND).any(axis=2)
            ys, xs = np.nonzero(mask)
            assert xs.min() >= 20 and xs.max() < 36 and ys.min() >= 20 and ys.max() < 36
            assert tuple(img[28, 28]) == rgb


@pytest.mark.parametrize("size", [32, 64, 100])
def test_layout_contract(size):
    rng = random.Random(size)
    gap = min_gap(size)
    assert min_gap(64) == 2
    for _ in range(60):
        scene = sample_scene(rng, size)
        assert 1 <= len(scene.objects) <= 4
        for i, a in enumerate(scene.objects):
            assert MIN_FRAC * size - 1 <= a.s <= MAX_FRAC * size + 1
            assert a.x >= 0 and a.y >= 0 and a.x + a.s <= size and a.y + a.s <= size
            for b in scene.objects[i + 1 :]:
                horiz = max(b.x - (a.x + a.s), a.x - (b.x + b.s))
                vert = max(b.y - (a.y + a.s), a.y - (b.y + b.s))
                assert max(horiz, vert) >= gap


def test_place_relation_and_place_more_keep_layout():
    rng = random.Random(0)
    for rel in ("left of", "right of", "above", "below"):
        s = place(rng, 64, [("cross", "yellow"), ("diamond", "blue")], relation_to_first=rel)
        assert rel in relation(s.objects[1].box, s.objects[0].box)
        more = place_more(rng, s, [("circle", "red")])
        assert more.objects[:2] == s.objects and len(more.objects) == 3
        assert fits(more.objects[2], more.objects[:2], 64)
    assert not fits(Obj("circle", "red", 60, 0, 10), [], 64)
    with pytest.raises(ValueError, match="canvas size"):
        check_canvas(600)
    with pytest.raises(ValueError, match="unknown colour"):
        render(Scene(64, (Obj("circle", "teal", 0, 0, 10),)))


def test_scene_dict_round_trip():
    s = sample_scene(random.Random(2))
    assert Scene.from_dict(s.to_dict()) == s
