"""The degradation the judge is specified to withstand (a test fixture for generated images)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from illume_core.judge.pixels import COLOR_NAMES
from illume_core.world.scenes import BACKGROUND, COLORS, Scene, draw_object


def render_degraded(
    scene: Scene,
    rng: np.random.Generator,
    noise: tuple[float, float] = (10.0, 20.0),
    blur: tuple[float, float] = (0.5, 1.0),
    shift: float = 20.0,
    specks: int = 3,
) -> Image.Image:
    """Render a scene the way a generator spoils it: what the judge is specified to withstand.

    Each object (and the background) gets its own colour shift of up to `shift` per channel,
    a few 1-2 px specks are sprinkled, then a Gaussian blur of a radius drawn from `blur` and
    Gaussian noise of a sigma drawn from `noise` (on 0..255).
    """
    from PIL import ImageFilter

    def jitter(rgb: Sequence[int]) -> tuple[int, int, int]:
        v = np.clip(np.asarray(rgb) + rng.uniform(-shift, shift, 3), 0, 255).round().astype(int)
        return (int(v[0]), int(v[1]), int(v[2]))

    size = scene.size
    im = Image.new("RGB", (size, size), jitter(BACKGROUND))
    draw = ImageDraw.Draw(im)
    for o in scene.objects:
        draw_object(draw, o, fill=jitter(COLORS[o.color]))
    for _ in range(specks):
        x, y = (int(v) for v in rng.integers(0, size - 2, 2))
        d = int(rng.integers(1, 3))
        draw.rectangle([x, y, x + d - 1, y + d - 1], fill=jitter(COLORS[str(rng.choice(COLOR_NAMES))]))
    if blur[1] > 0:
        im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(*blur))))
    a = np.asarray(im, dtype=np.float32)
    a = a + rng.normal(0.0, float(rng.uniform(*noise)), a.shape)
    return Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8), mode="RGB")
