import io
import json
import random

import numpy as np
import pytest
from PIL import Image, ImageDraw

from illume_core.judge import (
    UNKNOWN,
    detect,
    judge_folder,
    judge_image,
    label_components,
    render_degraded,
    summarize,
)
from illume_core.world.geneval import TAGS
from illume_core.world.prompts import KIND_DIMENSION, generate_prompts, kinds_for, scene_for, violate
from illume_core.world.scenes import BACKGROUND, COLORS, SHAPES, Obj, Scene, render


def found(scene_or_img) -> list[tuple[str, str, tuple[int, int, int, int]]]:
    img = render(scene_or_img) if isinstance(scene_or_img, Scene) else scene_or_img
    return sorted((d.shape, d.color, d.box) for d in detect(img).objects)


def truth(scene: Scene) -> list[tuple[str, str, tuple[int, int, int, int]]]:
    return sorted((o.shape, o.color, o.box) for o in scene.objects)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_every_shape_and_colour_is_found_exactly(size):
    s = max(8, round(0.2 * size))
    colors = list(COLORS)
    for i, shape in enumerate(SHAPES):
        for j in range(0, len(colors), 2):
            objs = (
                Obj(shape, colors[j], 1, 1, s),
                Obj(shape, colors[j + 1], size - s - 1, size - s - 1, s),
                Obj(list(SHAPES)[(i + 1) % 5], colors[(j + 3) % 10], 1, size - s - 1, s),
            )
            scene = Scene(size, objs)
            assert found(scene) == truth(scene), (size, shape, colors[j])


def test_random_scenes_at_64():
    rng = random.Random(3)
    from illume_core.world.scenes import sample_scene

    for _ in range(40):
        scene = sample_scene(rng, 64)
        assert found(scene) == truth(scene)


def test_each_tag_correct_on_its_scene_and_wrong_on_each_violation():
    rng = random.Random(7)
    metas = generate_prompts(seed=5, per_tag=2)
    assert {m.tag for m in metas} == set(TAGS)
    for meta in metas:
        ok = judge_image(render(scene_for(meta, rng)), meta)
        assert ok.correct, (meta.prompt, ok.reason)
        for kind in kinds_for(meta):
            bad = judge_image(render(violate(meta, rng, kind=kind)), meta)
            failed = [d for d, v in bad.dimensions.items() if not v]
            assert not bad.correct and failed == [KIND_DIMENSION[kind]], (meta.prompt, kind, bad.reason)
            assert bad.reason


def test_noisy_blurred_shifted_images():
    rng = random.Random(1)
    nrng = np.random.default_rng(1)
    metas = generate_prompts(seed=9, per_tag=3)
    agree = 0
    for meta in metas:
        agree += judge_image(render_degraded(scene_for(meta, rng), nrng), meta).correct
        kind = rng.choice(kinds_for(meta))
        agree += not judge_image(render_degraded(violate(meta, rng, kind=kind), nrng), meta).correct
    assert agree >= 0.9 * 2 * len(metas)
    # one clearly degraded scene, object by object
    scene = Scene(64, (Obj("cross", "blue", 5, 5, 16), Obj("circle", "yellow", 40, 38, 15)))
    img = render_degraded(scene, np.random.default_rng(0), noise=(20, 20), blur=(1.0, 1.0))
    assert [(s, c) for s, c, _ in found(img)] == [("circle", "yellow"), ("cross", "blue")]


def _ring_and_half_moon() -> Image.Image:
    img = Image.new("RGB", (64, 64), BACKGROUND)
    d = ImageDraw.Draw(img)
    d.ellipse([4, 4, 21, 21], fill=COLORS["red"])
    d.ellipse([8, 8, 17, 17], fill=BACKGROUND)
    d.pieslice([30, 30, 57, 57], 180, 360, fill=COLORS["blue"])  # a half disc
    return img


def test_unknown_blobs_are_reported_not_guessed():
    r = detect(_ring_and_half_moon())
    assert r.objects == []
    assert sorted(d.color for d in r.unknown) == ["blue", "red"]
    # the same blobs in a noisy image go through the fitted path and are still not guessed
    noisy = np.asarray(_ring_and_half_moon(), np.float32) + np.random.default_rng(0).normal(
        0, 15, (64, 64, 3)
    )
    r = detect(np.clip(noisy, 0, 255).astype(np.uint8))
    assert r.objects == []
    assert sorted(d.color for d in r.unknown) == ["blue", "red"]
    assert all(d.shape == UNKNOWN for d in r.unknown)


def test_specks_are_ignored():
    scene = Scene(64, (Obj("square", "green", 20, 20, 12),))
    img = render(scene)
    d = ImageDraw.Draw(img)
    for x, y in [(2, 2), (50, 5), (5, 55), (58, 58)]:
        d.rectangle([x, y, x + 1, y + 1], fill=COLORS["black"])
    r = detect(img)
    assert [(o.shape, o.color) for o in r.objects] == [("square", "green")]
    assert r.ignored_specks == 4 and r.unknown == []


def test_input_modes():
    scene = Scene(64, (Obj("triangle", "white", 10, 10, 14), Obj("square", "black", 40, 40, 12)))
    rgb = render(scene)
    want = truth(scene)
    assert found(rgb.convert("RGBA")) == want
    assert found(rgb.quantize(colors=16)) == want  # mode P with an exact palette
    a = np.asarray(rgb)
    assert found(a) == want
    assert found(a.astype(np.float32) / 255) == want
    assert found(a.astype(np.uint16) * 257) == want
    # grey images: white and black survive as themselves
    gray = rgb.convert("L")
    assert [(s, c) for s, c, _ in found(gray)] == [("square", "black"), ("triangle", "white")]
    buf = io.BytesIO()
    Image.fromarray(np.asarray(gray).astype(np.uint16) * 257).save(buf, format="PNG")
    im16 = Image.open(io.BytesIO(buf.getvalue()))
    assert im16.mode.startswith("I")
    assert [(s, c) for s, c, _ in found(im16)] == [("square", "black"), ("triangle", "white")]
    # a transparent corner composites over the background
    rgba = rgb.convert("RGBA")
    rgba.putpixel((0, 0), (255, 0, 0, 0))
    assert found(rgba) == want
    with pytest.raises(ValueError, match="resize"):
        detect(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        detect(np.zeros((64, 64, 2), np.uint8))


def test_label_components_8_connected():
    m = np.zeros((6, 8), bool)
    m[0, 0] = m[1, 1] = True  # diagonal neighbours join
    m[0, 4:7] = True
    m[1:4, 6] = True
    m[5, 0:8] = True
    labels, boxes, areas = label_components(m)
    assert len(areas) == 3 and sorted(areas.tolist()) == [2, 6, 8]
    assert labels[0, 0] == labels[1, 1] != labels[0, 4]
    assert boxes.tolist()[labels[0, 4] - 1] == [4, 0, 7, 4]


def _write_folder(root, items):
    for i, (meta, imgs) in enumerate(items):
        d = root / f"{i:05d}"
        (d / "samples").mkdir(parents=True)
        if meta is not None:
            (d / "metadata.jsonl").write_text(meta if isinstance(meta, str) else meta.dumps() + "\n")
        for k, im in enumerate(imgs):
            p = d / "samples" / f"{k:04d}.png"
            if isinstance(im, bytes):
                p.write_bytes(im)
            else:
                im.save(p)


def test_folder_with_bad_inputs(tmp_path):
    rng = random.Random(2)
    metas = generate_prompts(seed=1, per_tag=1)
    good = [(m, [render(scene_for(m, rng)), render(violate(m, rng))]) for m in metas[:3]]
    corrupt = (metas[3], [render(scene_for(metas[3], rng)), b"\x89PNG\r\n\x1a\nnot really"])
    missing = (None, [render(scene_for(metas[4], rng))])
    malformed = ('{"tag": "counting", "include": [}\n', [render(scene_for(metas[5], rng))])
    _write_folder(tmp_path, [*good, corrupt, missing, malformed])
    rep = judge_folder(tmp_path)
    assert len(rep.results) == 7
    assert [r.correct for r in rep.results[:6]] == [True, False] * 3
    assert len(rep.skipped) == 3
    msgs = {
        s.path.split("/")[-3] if s.path.endswith(".png") else s.path.split("/")[-2]: s for s in rep.skipped
    }
    assert (
        msgs["00003"].path.endswith("00003/samples/0001.png") and "cannot read image" in msgs["00003"].message
    )
    assert msgs["00004"].path.endswith("00004/metadata.jsonl") and "missing" in msgs["00004"].message
    assert msgs["00005"].line == 1 and "not valid JSON" in msgs["00005"].message
    line = rep.results[0].to_dict()
    assert list(line) == ["filename", "tag", "prompt", "correct", "reason", "metadata", "details"]
    assert json.loads(line["metadata"]) == metas[0].dump()
    assert set(json.loads(line["details"])) == {"objects", "unknown", "specks", "dimensions"}
    s = summarize(rep.results)
    assert s.n["single_object"] == 2 and s.per_tag["single_object"] == 0.5
    assert s.overall == pytest.approx(sum(s.per_tag.values()) / len(s.per_tag))
