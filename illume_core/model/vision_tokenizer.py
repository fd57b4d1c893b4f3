"""The vision tokenizers: images <-> grids of discrete codes that the LLM reads and writes.

`SemanticTokenizer` is ILLUME's: a frozen, text-aligned encoder's features (joined, as in
ILLUME+'s dual tokenizer, by each cell's exact pixel pattern) are quantized (nearest code by L2,
EMA codebook, data-initialised, dead codes restarted on the worst-fitted vectors) and trained to
reconstruct those semantic features (smooth-L1 + cosine); a `PixelDecoder` turns codes back into
pixels by classifying each pixel into ShapesWorld's palette, so edges stay crisp and colours exact. `PixelVQTokenizer` is
the VQGAN-style baseline: same quantizer and decoder, but a conv encoder trained on pixels only.
`PatternTokenizer` is the tiny preset's: codes are (cell mask, colour) pairs fitted to the world's
cells, near-exact at the coarse 8-px cells that let a small LLM draw 64 tokens instead of 256.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from illume_core.model.config import PATTERN_COLOURS, IllumeConfig
from illume_core.model.images import palette_index, palette_render
from illume_core.model.vision_encoder import NUM_CLASSES, VisionEncoder

OBJECT_WEIGHT = 4.0  # cross-entropy weight of object pixels against 1 for background pixels
# the decoder's per-code pattern table: the weight of its uniform start (a code's first cells
# outweigh it at once) and the probability floor inside its log
PATTERN_PRIOR = 1e-3
PATTERN_FLOOR = 1e-3
# scale of the semantic tokenizer's fixed random pattern projection (see SemanticTokenizer)
PATTERN_PROJ = 0.05


def cell_patterns(pixels: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Each cell's exact pixel pattern: (B, 3, H, W) -> palette one-hots (B, 11 * p * p, g, g)."""
    onehot = F.one_hot(palette_index(pixels), NUM_CLASSES).float()  # (B, H, W, K)
    return rearrange(onehot, "b (h p) (w q) k -> b (k p q) h w", p=patch_size, q=patch_size)


class VectorQuantizer(nn.Module):
    """Nearest-code quantizer with an EMA codebook, straight-through gradients and dead-code restart.

    The first training call places every code on an encoder output (random init leaves most codes
    far from the data). A code unused for `restart_after` training calls is moved onto one of the
    recent encoder outputs its codebook fits worst, so the whole codebook stays in use and spare
    codes go where reconstruction needs them (rare shape edges), not to the common background.
    """

    def __init__(
        self,
        codebook_size: int,
        code_dim: int,
        decay: float = 0.95,
        beta: float = 0.25,
        restart_after: int = 20,
    ) -> None:
        super().__init__()
        self.codebook_size, self.code_dim = codebook_size, code_dim
        self.decay, self.beta, self.restart_after = decay, beta, restart_after
        # the trainer turns restarts off for the last part of training, so that the decoder
        # settles on codes that no longer move
        self.restarts = True
        self.last_restarted = torch.zeros(0, dtype=torch.long)  # codes the latest restart moved
        self.register_buffer("codebook", torch.randn(codebook_size, code_dim) * 0.1)
        self.register_buffer("ema_count", torch.ones(codebook_size))
        self.register_buffer("ema_sum", self.codebook.clone())
        self.register_buffer("unused_for", torch.zeros(codebook_size, dtype=torch.long))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Code ids of the nearest codebook entries: (..., D) -> (...)."""
        flat = z.reshape(-1, self.code_dim)  # (M, D)
        d = (
            flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.T + self.codebook.pow(2).sum(1)
        )  # (M, K)
        return d.argmin(1).reshape(z.shape[:-1])

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Code vectors of ids: (...) -> (..., D)."""
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.codebook_size):
            raise ValueError(
                f"code ids must lie in [0, {self.codebook_size}); got {int(ids.min())}..{int(ids.max())}"
            )
        return F.embedding(ids, self.codebook)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (B, N, D) -> (straight-through quantized (B, N, D), ids (B, N), commitment loss)."""
        ids = self.nearest(z)  # (B, N)
        zq = self.lookup(ids)  # (B, N, D)
        if self.training:
            self._update(z.detach().reshape(-1, self.code_dim), ids.reshape(-1))
        commit = self.beta * F.mse_loss(z, zq.detach())
        return z + (zq - z).detach(), ids, commit

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, ids: torch.Tensor) -> None:
        if not bool(self.initialised):
            # codes start on *distinct* outputs: most cells are plain background, and codes put on
            # its copies would all be dead on the first call
            rows = flat.unique(dim=0)  # (U, D)
            order = torch.randperm(len(rows), device=flat.device)
            pick = rows[order[torch.arange(self.codebook_size, device=flat.device) % len(rows)]]  # (K, D)
            self.codebook.copy_(pick + 0.01 * pick.std() * torch.randn_like(pick))
            self.ema_sum.copy_(self.codebook)
            self.ema_count.fill_(1.0)
            self.initialised.fill_(True)
            ids = self.nearest(flat)
        # scatter-adds instead of an (M, K) one-hot matmul: with thousands of codes that matmul
        # cost as much as the rest of the quantizer
        count = torch.bincount(ids, minlength=self.codebook_size).type_as(flat)  # (K,)
        total = torch.zeros_like(self.ema_sum).index_add_(0, ids, flat)  # (K, D)
        self.ema_count.mul_(self.decay).add_(count, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(total, alpha=1 - self.decay)
        self.codebook.copy_(self.ema_sum / self.ema_count.clamp(min=1e-5).unsqueeze(1))
        self.unused_for.add_(1).masked_fill_(count > 0, 0)
        if self.restarts:
            self.restart_dead(flat)

    @torch.no_grad()
    def restart_dead(self, recent: torch.Tensor) -> int:
        """Move codes unused for `restart_after` calls onto the worst-fitted rows of `recent` (M, D).

        Returns how many codes moved. Rows are taken in order of their distance to the nearest
        code, largest first (each row once, cycling when there are more dead codes than rows).
        """
        dead = (self.unused_for >= self.restart_after).nonzero().squeeze(1)  # (R,)
        if len(dead) == 0 or len(recent) == 0:
            return 0
        err = (recent - self.codebook[self.nearest(recent)]).pow(2).sum(1)  # (M,)
        order = err.argsort(descending=True)  # (M,)
        pick = recent[order[torch.arange(len(dead), device=recent.device) % len(order)]]  # (R, D)
        pick = pick + 0.01 * pick.std() * torch.randn_like(pick)
        self.codebook[dead] = pick
        self.ema_sum[dead] = pick
        self.ema_count[dead] = 1.0
        self.unused_for[dead] = 0
        self.last_restarted = dead
        return len(dead)


class _ResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(8, width),
            nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.GroupNorm(8, width),
            nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PixelDecoder(nn.Module):
    """Code grid (B, code_dim, g, g) -> palette logits (B, 11, H, W).

    Residual 3x3 convs on the grid give each cell a view of its neighbours (whole objects span
    up to 4x4 cells, and a code alone cannot fix its cell's exact mask); a 1x1 head then gives
    each cell the logits of its patch_size^2 pixels, laid out by a pixel shuffle. No
    full-resolution conv: on a closed palette the per-cell head draws exact edges by itself,
    and full-resolution convs were most of the decoder's cost on CPU.
    """

    def __init__(self, cfg: IllumeConfig, blocks: int = 3, pattern_decay: float = 0.95) -> None:
        super().__init__()
        w, p = cfg.decoder_width, cfg.patch_size
        self.trunk = nn.Sequential(
            nn.Conv2d(cfg.code_dim, w, 3, padding=1), *(_ResBlock(w) for _ in range(blocks)), nn.GELU()
        )
        self.head = nn.Sequential(nn.Conv2d(w, NUM_CLASSES * p * p, 1), nn.PixelShuffle(p))
        # a decoder-side vector per code id, added to the code's quantizer vector: codes whose
        # vectors lie close together still decode to different pixels
        self.code_embed = nn.Embedding(cfg.codebook_size, cfg.code_dim)
        nn.init.zeros_(self.code_embed.weight)
        # each code's pixel pattern, estimated like the EMA codebook: the running mean of the
        # palette one-hots of the cells the quantizer gave that code (rows in cell_patterns'
        # (k p q) layout). Its log is added to the trunk's logits, so a code that stands for one
        # pattern decodes to exactly that pattern from its first use, and the trunk only has to
        # learn what the neighbours change (a code shared by several patterns). Without it the
        # trunk had to learn every code's 16 pixels by gradient, and most wrong cells of the
        # reconstructions were cells whose code meant one pattern only (docs/VISION.md).
        self.pattern_decay = pattern_decay
        cells = NUM_CLASSES * p * p
        self.register_buffer("pattern_count", torch.full((cfg.codebook_size,), PATTERN_PRIOR))
        self.register_buffer(
            "pattern_sum", torch.full((cfg.codebook_size, cells), PATTERN_PRIOR / NUM_CLASSES)
        )

    def code_prior(self, ids: torch.Tensor) -> torch.Tensor:
        """Log of each code's estimated pixel pattern, laid out as an image: (B, g*g) -> (B, K, H, W)."""
        g = int(round(ids.shape[1] ** 0.5))
        probs = self.pattern_sum / self.pattern_count.unsqueeze(1)  # (C, K*p*p)
        cell = F.embedding(ids, torch.log(probs + PATTERN_FLOOR))  # (B, N, K*p*p)
        p = self.head[1].upscale_factor  # the head's own pixel shuffle
        return F.pixel_shuffle(rearrange(cell, "b (h w) c -> b c h w", h=g, w=g), p)  # (B, K, H, W)

    @torch.no_grad()
    def update_patterns(self, ids: torch.Tensor, patterns: torch.Tensor, moved: torch.Tensor) -> None:
        """Fold a training batch into the pattern table: ids (B, N), patterns (B, K*p*p, g, g).

        `moved` are codes the quantizer just restarted elsewhere: their old pattern is dropped.
        """
        if len(moved):
            self.pattern_count[moved] = PATTERN_PRIOR
            self.pattern_sum[moved] = PATTERN_PRIOR / NUM_CLASSES
        flat_ids = ids.reshape(-1)  # (M,)
        flat = rearrange(patterns, "b c h w -> (b h w) c")  # (M, K*p*p)
        count = torch.bincount(flat_ids, minlength=len(self.pattern_count)).type_as(flat)  # (C,)
        total = torch.zeros_like(self.pattern_sum).index_add_(0, flat_ids, flat)  # (C, K*p*p)
        seen = count > 0  # codes not in the batch keep their estimate unchanged
        d = self.pattern_decay
        self.pattern_count[seen] = d * self.pattern_count[seen] + (1 - d) * count[seen]
        self.pattern_sum[seen] = d * self.pattern_sum[seen] + (1 - d) * total[seen]

    def forward(self, grid: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """grid (B, code_dim, g, g) quantized vectors, ids (B, g*g) their code ids."""
        g = grid.shape[-1]
        grid = grid + rearrange(self.code_embed(ids), "b (h w) d -> b d h w", h=g, w=g)
        return self.head(self.trunk(grid)) + self.code_prior(ids)  # (B, K, H, W)


class _CodeTokenizer(nn.Module, abc.ABC):
    """What both tokenizers share: quantizer, pixel decoder, encode/decode over code grids."""

    cfg: IllumeConfig
    quantizer: VectorQuantizer
    decoder: PixelDecoder

    @abc.abstractmethod
    def pre_quant(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, H, W) -> continuous pre-quantization vectors (B, N, code_dim)."""

    def _grid(self, z: torch.Tensor) -> torch.Tensor:
        return rearrange(z, "b (h w) d -> b d h w", h=self.cfg.grid)  # (B, D, g, g)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, H, W) in [0, 1] -> code ids LongTensor (B, N) in [0, codebook_size)."""
        return self.quantizer.nearest(self.pre_quant(pixels))  # (B, N)

    def decode_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Code ids (B, N) -> palette logits (B, 11, H, W)."""
        if ids.dim() != 2 or ids.shape[1] != self.cfg.image_tokens:
            raise ValueError(f"decode expects ids (B, {self.cfg.image_tokens}); got {tuple(ids.shape)}")
        return self.decoder(self._grid(self.quantizer.lookup(ids)), ids)  # (B, K, H, W)

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Code ids (B, N) -> pixels (B, 3, H, W) in [0, 1], each pixel one exact palette colour."""
        return palette_render(self.decode_logits(ids).argmax(1))  # (B, 3, H, W)

    def codebook_usage(self, ids: torch.Tensor) -> float:
        """Fraction of the codebook that appears in `ids`."""
        return float(ids.unique().numel()) / self.quantizer.codebook_size

    def _pixel_losses(self, pixels: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        zq, ids, commit = self.quantizer(z)  # (B, N, D), (B, N), ()
        logits = self.decoder(self._grid(zq), ids)  # (B, K, H, W)
        if self.training:
            # after the forward, so that the loss scores the table on cells it has not yet seen
            moved = self.quantizer.last_restarted
            self.quantizer.last_restarted = moved[:0]
            self.decoder.update_patterns(ids, cell_patterns(pixels, self.cfg.patch_size), moved)
        target = palette_index(pixels)  # (B, H, W)
        # objects cover about a tenth of the canvas, yet every judged verdict rests on their
        # pixels: weight them up so the decoder's errors do not hide in the background's mass
        fg = target > 0  # (B, H, W)
        weight = torch.where(fg, OBJECT_WEIGHT, 1.0)  # (B, H, W)
        pixel = (F.cross_entropy(logits, target, reduction="none") * weight).sum() / weight.sum()
        hit = logits.argmax(1) == target  # (B, H, W)
        return {
            "pixel": pixel,
            "commit": commit,
            "pixel_acc": hit.float().mean().detach(),
            "object_acc": hit[fg].float().mean().detach() if fg.any() else hit.float().mean().detach(),
            "zq": zq,
            "ids": ids,
        }


class SemanticTokenizer(_CodeTokenizer):
    """ILLUME's semantic vision tokenizer, trained against a frozen copy of the `VisionEncoder`.

    As in ILLUME, the codes are trained to reconstruct the encoder's semantic features
    (smooth-L1 + cosine, through `reconstructor`), and a pixel decoder maps them to images. Unlike
    ILLUME, a cell's code is *chosen* from its exact pixel pattern (the palette one-hot of its
    patch_size^2 pixels, through the per-cell `pre` net), not from its semantic feature: the
    semantic feature of a cell carries its context, so the same pixels got different codes and
    different pixels shared one, and the judge failed most reconstructions (measured in
    docs/VISION.md). The semantic objective still shapes the code space: its gradient reaches
    `pre` through the straight-through quantizer, so cells of similar meaning land near each
    other and are the ones merged when the codebook is short.
    """

    def __init__(self, cfg: IllumeConfig, encoder: VisionEncoder | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = copy.deepcopy(encoder) if encoder is not None else VisionEncoder(cfg)
        self.encoder.requires_grad_(False).eval()
        w, d = cfg.vision_width, cfg.code_dim
        pattern = NUM_CLASSES * cfg.patch_size * cfg.patch_size
        self.pre = nn.Sequential(nn.Conv2d(pattern, w, 1), nn.GELU(), nn.Conv2d(w, d, 1))
        # a fixed random projection of the same one-hot, added to `pre`'s output: distinct
        # patterns keep distinct vectors whatever `pre` learns. Without it, the commitment and
        # semantic losses pulled rare patterns onto the vector of a common one (measured: 0.2
        # apart, the codebook's own spacing), they shared its code, and the judge failed the
        # shapes drawn from them (docs/VISION.md). Seeded, so every build gets the same one.
        proj = torch.randn(pattern, d, generator=torch.Generator().manual_seed(0)) * PATTERN_PROJ
        self.register_buffer("pattern_proj", proj)
        self.quantizer = VectorQuantizer(cfg.codebook_size, d)
        self.reconstructor = nn.Sequential(
            nn.Conv2d(d, w, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(w, w, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(w, w, 1),
        )
        self.decoder = PixelDecoder(cfg)

    def train(self, mode: bool = True) -> SemanticTokenizer:
        super().train(mode)
        self.encoder.eval()  # the semantic encoder stays frozen, whatever the caller sets
        return self

    def _features_and_codes_in(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen semantic features (B, N, W) and the pre-quantization vectors (B, N, D)."""
        with torch.no_grad():
            feats = self.encoder(pixels)  # (B, N, W)
        return feats, self.pre_quant(pixels)

    def pre_quant(self, pixels: torch.Tensor) -> torch.Tensor:
        cells = cell_patterns(pixels, self.cfg.patch_size)  # (B, K*p*p, g, g)
        z = rearrange(self.pre(cells), "b d h w -> b (h w) d")  # (B, N, D)
        return z + rearrange(cells, "b c h w -> b (h w) c") @ self.pattern_proj  # (B, N, D)

    def losses(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training losses on a batch: feature reconstruction + pixel CE + commitment; key 'loss' is the sum."""
        feats, z = self._features_and_codes_in(pixels)  # (B, N, W), (B, N, D)
        out = self._pixel_losses(pixels, z)
        rec = rearrange(self.reconstructor(self._grid(out["zq"])), "b w h v -> b (h v) w")  # (B, N, W)
        out["feature_l1"] = F.smooth_l1_loss(rec, feats)
        out["feature_cos"] = (1 - F.cosine_similarity(rec, feats, dim=-1)).mean()
        out["loss"] = out["feature_l1"] + out["feature_cos"] + out["pixel"] + out["commit"]
        return out


class PixelVQTokenizer(_CodeTokenizer):
    """The VQGAN-style baseline: a conv encoder trained on pixels only, same quantizer and decoder."""

    def __init__(self, cfg: IllumeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w, stem = cfg.decoder_width, max(16, cfg.decoder_width // 2)
        self.conv_encoder = nn.Sequential(
            nn.Conv2d(3, stem, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(stem, stem, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(stem, w, cfg.patch_size, stride=cfg.patch_size),
            _ResBlock(w),
            _ResBlock(w),
            nn.GELU(),
            nn.Conv2d(w, cfg.code_dim, 1),
        )
        self.quantizer = VectorQuantizer(cfg.codebook_size, cfg.code_dim)
        self.decoder = PixelDecoder(cfg)

    def pre_quant(self, pixels: torch.Tensor) -> torch.Tensor:
        return rearrange(self.conv_encoder(pixels * 2 - 1), "b d h w -> b (h w) d")  # (B, N, D)

    def losses(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training losses on a batch: pixel CE + commitment; key 'loss' is the sum."""
        out = self._pixel_losses(pixels, self.pre_quant(pixels))
        out["loss"] = out["pixel"] + out["commit"]
        return out


def cell_classes(pixels: torch.Tensor, cell: int) -> torch.Tensor:
    """Each cell's palette classes, row-major: (B, 3, H, W) -> (B, N, cell * cell) long."""
    return rearrange(palette_index(pixels), "b (h p) (w q) -> b (h w) (p q)", p=cell, q=cell)


def split_cells(classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cells' palette classes (..., P) -> (dominant colour index 0..9 (...), its mask (..., P) float).

    Cells with no object pixel get colour 0 and an empty mask.
    """
    counts = F.one_hot(classes, NUM_CLASSES)[..., 1:].sum(-2)  # (..., 10)
    colour = counts.argmax(-1)  # (...)
    mask = (classes == (colour + 1).unsqueeze(-1)).float()  # (..., P)
    return colour, mask


def nearest_mask(table: torch.Tensor, mask: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """Index of the nearest row of `table` (K, P) in {0, 1} by Hamming distance: (M', P) -> (M',)."""
    size = table.sum(1)  # (K,)
    out = []
    for part in mask.split(chunk):
        # |a - b|_1 for 0/1 vectors = |a| + |b| - 2 a.b; |a| is the same for every code
        out.append((size - 2 * part @ table.T).argmin(1))  # (m,)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=mask.device)


@torch.no_grad()
def pattern_codes(pixels: torch.Tensor, masks: torch.Tensor, cell: int) -> torch.Tensor:
    """Pixels (B, 3, H, W) in [0, 1] -> pattern code ids (B, N): each cell's nearest mask among
    `masks` (K, cell * cell) in {0, 1} (row 0 the empty cell) in its dominant colour; 0 = empty."""
    colour, mask = split_cells(cell_classes(pixels, cell))  # (B, N), (B, N, P)
    ids = nearest_mask(masks.to(mask), mask.flatten(0, 1)).view(colour.shape)  # (B, N)
    return torch.where(ids == 0, 0, ids * PATTERN_COLOURS + colour)  # (B, N)


class PatternTokenizer(nn.Module):
    """Image <-> grid of (cell mask, colour) codes, fitted to ShapesWorld's cells: near-exact at coarse cells.

    Code `m * PATTERN_COLOURS + c` draws mask m (a binary gen_cell x gen_cell pattern) in
    reference colour c; mask 0 is the empty cell (background). A cell is encoded by its dominant
    object colour and the mask nearest (Hamming) to where that colour lies. The masks are
    fitted by k-means over the cells of many renders (`fit`), so the codebook holds the edge,
    corner and interior patterns the world's shapes leave in a cell. Why not the learned semantic
    quantizer at 8-px cells: a cell there holds one of more than 20,000 exact patterns in 6,000
    renders, the learned quantizer merged them and the judge passed 0.23 of its reconstructions
    (docs/VISION.md); 1,638 fitted masks x 10 colours (ILLUME's 16k codebook) keep the shapes.
    The frozen understanding encoder rides along (`encoder`) so that the model built on this
    tokenizer starts from it, as ILLUME starts both paths from one encoder.
    """

    def __init__(self, cfg: IllumeConfig, encoder: VisionEncoder | None = None) -> None:
        super().__init__()
        if cfg.tokenizer != "pattern":
            raise ValueError(f"preset {cfg.name!r} uses the {cfg.tokenizer!r} tokenizer, not 'pattern'")
        self.cfg = cfg
        self.encoder = copy.deepcopy(encoder) if encoder is not None else VisionEncoder(cfg)
        self.encoder.requires_grad_(False).eval()
        cells = cfg.gen_cell * cfg.gen_cell
        self.register_buffer("masks", torch.zeros(cfg.code_masks, cells))  # (M, p*p) in {0, 1}
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def train(self, mode: bool = True) -> PatternTokenizer:
        super().train(mode)
        self.encoder.eval()
        return self

    # ---- cells <-> (mask, colour) ------------------------------------------------------------
    split_cells = staticmethod(split_cells)

    def nearest_mask(self, mask: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
        """Index of the nearest fitted mask by Hamming distance: (M', P) -> (M',)."""
        return nearest_mask(self.masks, mask, chunk)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, H, W) in [0, 1] -> code ids LongTensor (B, N) in [0, codebook_size)."""
        if not bool(self.fitted):
            raise RuntimeError("the pattern tokenizer has no masks yet: fit it (train_tokenizer) first")
        return pattern_codes(pixels, self.masks, self.cfg.gen_cell)

    def _check_ids(self, ids: torch.Tensor) -> None:
        if ids.dim() != 2 or ids.shape[1] != self.cfg.image_tokens:
            raise ValueError(f"decode expects ids (B, {self.cfg.image_tokens}); got {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.cfg.codebook_size):
            raise ValueError(
                f"code ids must lie in [0, {self.cfg.codebook_size}); got {int(ids.min())}..{int(ids.max())}"
            )

    def decode_classes(self, ids: torch.Tensor) -> torch.Tensor:
        """Code ids (B, N) -> palette classes (B, H, W): each cell its mask in its colour."""
        self._check_ids(ids)
        mask = self.masks[ids // PATTERN_COLOURS]  # (B, N, P)
        classes = (mask * (ids % PATTERN_COLOURS + 1).unsqueeze(-1)).long()  # (B, N, P)
        g, p = self.cfg.gen_grid, self.cfg.gen_cell
        return rearrange(classes, "b (h w) (p q) -> b (h p) (w q)", h=g, w=g, p=p, q=p)

    def decode_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Code ids (B, N) -> palette logits (B, 11, H, W) (one-hot: the decoding is exact)."""
        onehot = F.one_hot(self.decode_classes(ids), NUM_CLASSES).float()  # (B, H, W, K)
        return rearrange(onehot, "b h w k -> b k h w")

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Code ids (B, N) -> pixels (B, 3, H, W) in [0, 1], each pixel one exact palette colour."""
        return palette_render(self.decode_classes(ids))

    def codebook_usage(self, ids: torch.Tensor) -> float:
        """Fraction of the codebook that appears in `ids`."""
        return float(ids.unique().numel()) / self.cfg.codebook_size

    # ---- fitting -----------------------------------------------------------------------------
    @torch.no_grad()
    def fit(
        self,
        pixels: torch.Tensor | list[torch.Tensor],
        iters: int = 10,
        progress: Callable[[int, dict[str, float]], None] | None = None,
    ) -> PatternTokenizer:
        """Fit the masks to renders (B, 3, H, W), or a list of such chunks: k-means (Hamming, majority-vote centres) on the
        masks of their non-empty cells, started from the most frequent exact masks.

        Mask 0 stays the empty cell. A centre left without members keeps its place.
        """
        parts = []
        for chunk in [pixels] if isinstance(pixels, torch.Tensor) else pixels:
            _, m = self.split_cells(cell_classes(chunk, self.cfg.gen_cell))  # (b, N, P)
            m = m.flatten(0, 1)
            parts.append(m[m.sum(1) > 0])
        mask = torch.cat(parts)  # (F, P): object cells only
        k = self.cfg.code_masks - 1
        uniq, counts = torch.unique(mask, dim=0, return_counts=True)
        start = uniq[counts.argsort(descending=True)[:k]]  # (<=k, P)
        centres = torch.zeros(k, mask.shape[1])
        centres[: len(start)] = start
        if len(start) < k:  # fewer distinct masks than codes: the rest repeat the common ones
            centres[len(start) :] = start[torch.arange(k - len(start)) % max(1, len(start))]
        self.masks.zero_()
        for it in range(max(1, iters)):
            self.masks[1:] = centres
            near = self.nearest_mask(mask)  # (F,) in [0, k]; 0 only if the empty mask is nearest
            err = (mask - self.masks[near]).abs().sum(1)  # (F,)
            member = near - 1
            keep = member >= 0
            total = torch.zeros_like(centres).index_add_(0, member[keep], mask[keep])  # (k, P)
            n = torch.bincount(member[keep], minlength=k).float()  # (k,)
            moved = (total / n.clamp(min=1).unsqueeze(1) > 0.5).float()
            centres = torch.where(n.unsqueeze(1) > 0, moved, centres)
            if progress:
                progress(it, {"hamming": float(err.mean()), "exact_cells": float((err == 0).float().mean())})
        self.masks[1:] = centres
        self.fitted.fill_(True)
        return self


def make_tokenizer(
    cfg: IllumeConfig, encoder: VisionEncoder | None = None
) -> SemanticTokenizer | PatternTokenizer:
    """The preset's vision tokenizer (untrained), around a copy of `encoder` when given."""
    return PatternTokenizer(cfg, encoder) if cfg.tokenizer == "pattern" else SemanticTokenizer(cfg, encoder)
