"""Image conversions shared by every model part: PIL <-> tensors, PNG bytes, palette classes.

Models see images as float32 tensors (B, 3, H, W) in [0, 1]; storage keeps PNG bytes. The
palette helpers map pixels to ShapesWorld's eleven exact colours (background + ten references),
which is how the pixel decoders predict crisp, exact-colour shapes.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from illume_core.world.scenes import BACKGROUND, COLORS

# class 0 is the background, then the contract's ten colours in order
PALETTE_NAMES: tuple[str, ...] = ("background", *COLORS)
PALETTE: tuple[tuple[int, int, int], ...] = (BACKGROUND, *COLORS.values())


def to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """Stack PIL images of one size into a float32 batch (B, 3, H, W) in [0, 1]."""
    if not images:
        raise ValueError("to_tensor needs at least one image; got an empty list")
    sizes = {im.size for im in images}
    if len(sizes) != 1:
        raise ValueError(f"images must share one size to be batched; got sizes {sorted(sizes)}")
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])  # (B, H, W, 3)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W)


def to_pil(x: torch.Tensor) -> list[Image.Image]:
    """A batch (B, 3, H, W) in [0, 1] (or one image (3, H, W)) to PIL images, clamped and rounded."""
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"to_pil expects (B, 3, H, W) or (3, H, W); got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        # clamp keeps NaN, and NaN cast to uint8 is arbitrary: a silent garbage image otherwise
        raise ValueError(
            "to_pil: pixels are not finite (NaN or inf); the decoder or its checkpoint is broken, "
            "load another checkpoint"
        )
    arr = (x.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)  # (B, 3, H, W)
    arr = arr.permute(0, 2, 3, 1).numpy()  # (B, H, W, 3)
    return [Image.fromarray(a, mode="RGB") for a in arr]


def png_bytes(img: Image.Image) -> bytes:
    """Lossless PNG encoding of an image."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def from_png(data: bytes) -> Image.Image:
    """Decode PNG bytes to an RGB image; corrupt or non-PNG input raises ValueError saying so."""
    if not isinstance(data, bytes | bytearray) or not data:
        raise ValueError("from_png needs non-empty PNG bytes; got an empty or non-bytes value")
    if not bytes(data[:8]) == b"\x89PNG\r\n\x1a\n":
        raise ValueError("from_png: data is not a PNG (missing the PNG signature); pass png_bytes() output")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Image.DecompressionBombError as e:
        # the header claims more pixels than PIL decodes: refuse before allocating them
        raise ValueError(
            f"from_png: refused a decompression bomb ({e}); images here are canvas-sized, "
            "so re-render it at the canvas size"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"from_png: corrupt PNG data ({e}); re-encode the image with png_bytes()") from e
    return img.convert("RGB")


def palette_tensor() -> torch.Tensor:
    """The eleven palette colours as a float tensor (11, 3) in [0, 1]."""
    return torch.tensor(PALETTE, dtype=torch.float32) / 255.0


def palette_index(pixels: torch.Tensor) -> torch.Tensor:
    """Nearest palette class per pixel: (B, 3, H, W) in [0, 1] -> LongTensor (B, H, W) in [0, 11)."""
    pal = palette_tensor().to(pixels.device)  # (K, 3)
    # |x - p|^2 = |x|^2 - 2 x.p + |p|^2; |x|^2 is the same for every class, so it drops out of
    # the argmin (one small matmul instead of a (B, K, 3, H, W) broadcast: about 10x faster)
    # classes last, so the argmax runs over contiguous memory (a strided argmax over dim 1 took
    # most of an image's encoding time)
    score = torch.einsum("bchw,kc->bhwk", pixels, pal) - 0.5 * pal.pow(2).sum(1)
    return score.argmax(-1)  # (B, H, W)


def palette_render(classes: torch.Tensor) -> torch.Tensor:
    """Palette classes (B, H, W) to pixels (B, 3, H, W) in [0, 1]."""
    pal = palette_tensor().to(classes.device)  # (K, 3)
    return pal[classes].permute(0, 3, 1, 2).contiguous()  # (B, 3, H, W)
