"""The understanding encoder (continuous image features) and its contrastive pretraining parts.

`VisionEncoder` turns pixels into one feature per grid cell: a conv stem plus a ViT-style linear
embedding of each cell's pixels, then a few transformer blocks with learned 2D positions.
`TextTower` and `ContrastiveModel` exist only to pretrain it CLIP-style on ShapesWorld captions;
a per-cell pixel head keeps sub-cell edges in the features, which the semantic tokenizer needs.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from illume_core.model.config import IllumeConfig
from illume_core.model.images import PALETTE
from illume_core.world.scenes import COLORS, NUMBERS, RELATIONS, SHAPES

NUM_CLASSES = len(PALETTE)  # palette classes per pixel: background + ten colours


def conv_stem(cfg: IllumeConfig, first: int = 32) -> nn.Sequential:
    """3x3 convs from pixels down to the cell grid: (B, 3, H, W) -> (B, vision_width, grid, grid).

    One full-resolution conv, then stride-2 convs (channels doubling up to vision_width) until a
    cell is one position (a last conv takes any odd factor left), then one conv on the grid.
    Local edge detectors are what tell a circle from a diamond; a linear embedding of 4x4 cells
    and transformer blocks alone did not learn shape in 300 supervised steps (docs/VISION.md).
    """
    width = cfg.vision_width
    layers: list[nn.Module] = [nn.Conv2d(3, min(first, width), 3, padding=1), nn.GELU()]
    ch, left = min(first, width), cfg.patch_size
    while left > 1:
        stride = 2 if left % 2 == 0 else left
        left //= stride
        out = width if left == 1 else min(width, ch * 2)
        kernel, pad = (3, 1) if stride == 2 else (stride, 0)
        layers += [nn.Conv2d(ch, out, kernel, stride=stride, padding=pad), nn.GELU()]
        ch = out
    if ch != width:  # patch_size 1: no stride left to widen the channels
        layers += [nn.Conv2d(ch, width, 1), nn.GELU()]
    layers += [nn.Conv2d(width, width, 3, padding=1)]
    return nn.Sequential(*layers)


class VisionEncoder(nn.Module):
    """Pixels (B, 3, H, W) in [0, 1] -> features (B, N, vision_width), N = cfg.image_tokens."""

    def __init__(self, cfg: IllumeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # a linear embedding of each cell's raw pixels (as ViT) keeps every cell's exact content
        # linearly readable; the conv stem beside it gives the features shape (edges, corners)
        self.patchify = nn.Conv2d(3, cfg.vision_width, cfg.patch_size, stride=cfg.patch_size)
        self.stem = conv_stem(cfg)
        self.row_pos = nn.Parameter(torch.zeros(cfg.grid, 1, cfg.vision_width))
        self.col_pos = nn.Parameter(torch.zeros(1, cfg.grid, cfg.vision_width))
        nn.init.normal_(self.row_pos, std=0.02)
        nn.init.normal_(self.col_pos, std=0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                cfg.vision_width,
                cfg.vision_heads,
                dim_feedforward=4 * cfg.vision_width,
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(cfg.vision_layers)
        )
        self.norm = nn.LayerNorm(cfg.vision_width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        size = self.cfg.image_size
        if pixels.dim() != 4 or pixels.shape[1:] != (3, size, size):
            raise ValueError(
                f"VisionEncoder expects (B, 3, {size}, {size}) pixels in [0, 1]; got {tuple(pixels.shape)}; "
                "resize images to the preset's image_size"
            )
        x = pixels * 2 - 1  # (B, 3, H, W)
        x = self.patchify(x) + self.stem(x)  # (B, D, g, g)
        x = x + rearrange(self.row_pos + self.col_pos, "h w d -> d h w")  # (B, D, g, g)
        x = rearrange(x, "b d h w -> b (h w) d")  # (B, N, D)
        for block in self.blocks:
            x = block(x)  # (B, N, D)
        return self.norm(x)  # (B, N, D)


# words every ShapesWorld caption is built from; anything else maps to <unk>
_FUNCTION_WORDS = (
    "a an the photo of picture image showing shows with and there is are in on at to this "
    "some one two three four no left right above below next object objects shape shapes "
    "colour color colored coloured scene which where how many what it its zero empty grey gray nothing background"
).split()


def caption_vocab() -> list[str]:
    """The closed caption vocabulary: <pad>, <unk>, then ShapesWorld words and function words."""
    words: list[str] = []
    for w in [
        *SHAPES,
        *SHAPES.values(),
        *COLORS,
        *NUMBERS.values(),
        *(part for r in RELATIONS for part in r.split()),
        *_FUNCTION_WORDS,
    ]:
        if w not in words:
            words.append(w)
    return ["<pad>", "<unk>", *words]


class TextTower(nn.Module):
    """A word-level text encoder over the closed caption vocabulary: captions -> (B, width)."""

    def __init__(self, width: int = 128, layers: int = 2, heads: int = 4, max_words: int = 48) -> None:
        super().__init__()
        self.vocab = caption_vocab()
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_words = max_words
        self.embed = nn.Embedding(len(self.vocab), width, padding_idx=0)
        self.pos = nn.Parameter(torch.randn(max_words, width) * 0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(width)

    def tokenize(self, captions: list[str]) -> torch.Tensor:
        """Captions -> LongTensor (B, T) of word ids, right-padded with 0 (<pad>), T <= max_words."""
        rows = [
            [self.index.get(w, 1) for w in re.findall(r"[a-z]+", c.lower())][: self.max_words]
            for c in captions
        ]
        width = max(1, max(len(r) for r in rows))
        out = torch.zeros(len(rows), width, dtype=torch.long)  # (B, T)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return out

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Word ids (B, T) -> pooled text feature (B, width) (mean over non-pad words)."""
        pad = ids == 0  # (B, T)
        x = self.embed(ids) + self.pos[: ids.shape[1]]  # (B, T, D)
        for block in self.blocks:
            x = block(x, src_key_padding_mask=pad)  # (B, T, D)
        x = self.norm(x)  # (B, T, D)
        keep = (~pad).unsqueeze(-1).float()  # (B, T, 1)
        return (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)  # (B, D)


class ContrastiveModel(nn.Module):
    """CLIP on ShapesWorld: pooled image feature vs caption feature, learned temperature.

    The image feature is the max over cells: an object covers a few of the 256 cells, and a mean
    drowns it in background (a shape classifier on mean-pooled features stayed at chance for
    300 steps; on max-pooled ones it learned). A per-cell pixel head (each cell's feature -> the
    palette class of its patch_size^2 pixels) is trained alongside, so the features keep the
    exact sub-cell layout of shapes.
    """

    def __init__(self, encoder: VisionEncoder, text: TextTower, embed_dim: int = 128) -> None:
        super().__init__()
        cfg = encoder.cfg
        self.encoder = encoder
        self.text = text
        self.image_proj = nn.Linear(cfg.vision_width, embed_dim)
        self.text_proj = nn.Linear(text.embed.embedding_dim, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.cell_head = nn.Linear(cfg.vision_width, cfg.patch_size * cfg.patch_size * NUM_CLASSES)

    @staticmethod
    def pool(feats: torch.Tensor) -> torch.Tensor:
        """Cell features (B, N, D) -> one image feature (B, D): the max over cells."""
        return feats.max(1).values

    def embed_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Encoder features (B, N, D) -> unit image embeddings (B, E)."""
        return F.normalize(self.image_proj(self.pool(feats)), dim=-1)  # (B, E)

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, H, W) -> unit image embeddings (B, E)."""
        return self.embed_features(self.encoder(pixels))  # (B, E)

    def embed_texts(self, ids: torch.Tensor) -> torch.Tensor:
        """Word ids (B, T) -> unit text embeddings (B, E)."""
        return F.normalize(self.text_proj(self.text(ids)), dim=-1)  # (B, E)

    def forward(
        self,
        pixels: torch.Tensor,
        ids: torch.Tensor,
        classes: torch.Tensor | None = None,
        negative_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Losses for a batch of matching (image, caption) pairs.

        `classes` (B, H, W) adds the per-cell pixel head; `negative_ids` (M, T) are extra captions
        that match no image in the batch (hard negatives: one word changed), scored against every
        image in the image-to-caption direction.
        """
        feats = self.encoder(pixels)  # (B, N, D)
        img = self.embed_features(feats)  # (B, E)
        txt = self.embed_texts(ids)  # (B, E)
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        logits = scale * img @ txt.T  # (B, B)
        target = torch.arange(len(img), device=img.device)
        to_text = logits
        if negative_ids is not None:
            to_text = torch.cat([logits, scale * img @ self.embed_texts(negative_ids).T], 1)  # (B, B + M)
        clip = (F.cross_entropy(to_text, target) + F.cross_entropy(logits.T, target)) / 2
        out = {"clip": clip, "loss": clip}
        if classes is not None:
            p, g = self.encoder.cfg.patch_size, self.encoder.cfg.grid
            cell = self.cell_head(feats)  # (B, N, p*p*K)
            cell = rearrange(cell, "b (h w) (p q k) -> b k (h p) (w q)", h=g, w=g, p=p, q=p, k=NUM_CLASSES)
            out["pixel"] = F.cross_entropy(cell, classes)
            out["loss"] = out["loss"] + out["pixel"]
        return out
