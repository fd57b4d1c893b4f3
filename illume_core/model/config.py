"""Model configuration: one typed config and a registry of named presets.

The CLI, the flows and the tests all read `PRESETS`; `get_preset(name)` is the single entry
point and names the valid choices when given a wrong one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# colours of the pattern tokenizer's codes: the contract's ten reference colours
PATTERN_COLOURS = 10


class IllumeConfig(BaseModel):
    """Shapes of every part of the model. Defaults are the `tiny-256` preset.

    Upper bounds sit far above the `illume-7b` preset: they only refuse sizes no machine could
    allocate (a typo of a few zeros), with a message naming the field, before any memory is used.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "tiny-256"
    # images
    image_size: int = Field(64, ge=32, le=1024)  # square input/output canvas in pixels
    # pixels per side of one understanding cell (one encoder feature)
    patch_size: int = Field(4, ge=1, le=256)
    # pixels per side of one generation cell (one image token the LLM draws); None: patch_size.
    # The two grids may differ: the encoder reads fine cells, the LLM draws coarse ones
    gen_patch_size: int | None = Field(None, ge=1, le=256)
    # understanding encoder (continuous features) + adapter
    vision_width: int = Field(128, ge=8, le=65536)  # encoder feature dimension per grid cell
    vision_layers: int = Field(2, ge=0, le=1024)  # transformer blocks on top of the patch embedding
    vision_heads: int = Field(4, ge=1, le=1024)
    # the adapter merges each adapter_pool x adapter_pool block of encoder cells into one LLM
    # input position (concatenated features -> MLP), so understanding costs grid^2 / pool^2 tokens
    adapter_pool: int = Field(2, ge=1, le=64)
    # vision tokenizer (discrete output): "semantic" (ILLUME's: codes reconstruct the encoder's
    # features) or "pattern" (codes are (cell mask, colour) pairs fitted to the world's cells, so
    # coarse cells stay near-exact; codebook_size = masks x PATTERN_COLOURS, and the LLM's code
    # rows are factorized into a mask part and a colour part)
    tokenizer: Literal["semantic", "pattern"] = "semantic"
    codebook_size: int = Field(
        2048, ge=2, le=1 << 20
    )  # number of image codes (image tokens in the LLM vocab)
    code_dim: int = Field(
        32, ge=2, le=65536
    )  # dimension of a codebook entry (low-dim codes use codebooks well)
    decoder_width: int = Field(
        128, ge=8, le=65536
    )  # channels of the pixel decoder (it works on the code grid)
    # language model (transformers Llama from config)
    llm_arch: str = "llama"
    hidden_size: int = Field(192, ge=8, le=65536)
    num_layers: int = Field(4, ge=1, le=1024)
    num_heads: int = Field(4, ge=1, le=1024)
    num_kv_heads: int = Field(4, ge=1, le=1024)
    intermediate_size: int = Field(512, ge=8, le=1 << 20)
    text_vocab_size: int = Field(1024, ge=64, le=1 << 20)  # trained BPE vocab incl. special tokens
    max_seq_len: int = Field(384, ge=16, le=1 << 20)
    rope_theta: float = Field(10000.0, gt=0)
    # where real weights live for a from_pretrained load (None: build from config)
    pretrained_path: str | None = None

    @model_validator(mode="after")
    def _check(self) -> IllumeConfig:
        for field in ("patch_size", "gen_patch_size"):
            cell = getattr(self, field)
            if cell is not None and self.image_size % cell:
                raise ValueError(
                    f"image_size {self.image_size} is not a multiple of {field} {cell}; "
                    "choose sizes whose ratio is the grid side"
                )
        if self.tokenizer == "pattern" and (
            self.codebook_size % PATTERN_COLOURS or self.codebook_size < 2 * PATTERN_COLOURS
        ):
            raise ValueError(
                f"the pattern tokenizer's codebook is masks x {PATTERN_COLOURS} colours; codebook_size "
                f"{self.codebook_size} is not such a product (for example 16380 = 1638 x 10)"
            )
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError("hidden_size must divide by num_heads, and num_heads by num_kv_heads")
        if self.vision_width % self.vision_heads:
            raise ValueError("vision_width must divide by vision_heads")
        if self.grid % self.adapter_pool:
            raise ValueError(
                f"adapter_pool {self.adapter_pool} does not divide the {self.grid}x{self.grid} grid; "
                "choose a divisor of image_size / patch_size"
            )
        if self.max_seq_len < self.image_tokens + 32:
            raise ValueError(
                f"max_seq_len {self.max_seq_len} leaves no room around {self.image_tokens} image tokens"
            )
        return self

    def vision_part(self) -> dict:
        """The fields that shape the vision encoder and tokenizer (what `--vision-from` shares)."""
        return {k: getattr(self, k) for k in VISION_FIELDS}

    @property
    def grid(self) -> int:
        """Side of the understanding grid (encoder features per side)."""
        return self.image_size // self.patch_size

    @property
    def gen_cell(self) -> int:
        """Pixels per side of one generation cell."""
        return self.gen_patch_size or self.patch_size

    @property
    def gen_grid(self) -> int:
        """Side of the image-token grid the LLM draws."""
        return self.image_size // self.gen_cell

    @property
    def image_tokens(self) -> int:
        """Image tokens per generated image (gen_grid x gen_grid)."""
        return self.gen_grid * self.gen_grid

    @property
    def encoder_cells(self) -> int:
        """Encoder features per image (grid x grid)."""
        return self.grid * self.grid

    @property
    def code_masks(self) -> int:
        """Cell masks of the pattern tokenizer (codebook_size / PATTERN_COLOURS)."""
        return self.codebook_size // PATTERN_COLOURS

    @property
    def understanding_tokens(self) -> int:
        """LLM input positions per image on the understanding path (the adapter's merged grid)."""
        return (self.grid // self.adapter_pool) ** 2


# the fields a trained encoder and vision tokenizer depend on; the adapter and the LLM are not
# among them, so runs that differ only there can share one vision checkpoint
VISION_FIELDS = (
    "image_size",
    "patch_size",
    "gen_patch_size",
    "vision_width",
    "vision_layers",
    "vision_heads",
    "tokenizer",
    "codebook_size",
    "code_dim",
    "decoder_width",
)

PRESETS: dict[str, IllumeConfig] = {
    # trains on 2 CPU cores in minutes: 64 px; the LLM draws an 8x8 grid of 8-px cells (64 image
    # tokens) from 16,380 pattern codes (1,638 cell masks x 10 colours, ILLUME's codebook size),
    # and reads a 16x16 grid of 4-px encoder cells merged 2x2 by the adapter (64 positions)
    "tiny": IllumeConfig(name="tiny", gen_patch_size=8, tokenizer="pattern", codebook_size=16380),
    # the earlier tiny: 256 image tokens (4-px cells, as ILLUME's 16x16) from ILLUME's semantic
    # tokenizer with 2,048 codes; kept to compare against (benchmarks/base_scaling.py)
    "tiny-256": IllumeConfig(name="tiny-256"),
    # one GPU: 128 px, 256 tokens, codebook 4096, LLM about 100M parameters
    "small": IllumeConfig(
        name="small",
        image_size=128,
        patch_size=8,
        adapter_pool=1,
        vision_width=384,
        vision_layers=4,
        vision_heads=6,
        codebook_size=4096,
        code_dim=32,
        decoder_width=128,
        hidden_size=768,
        num_layers=12,
        num_heads=12,
        num_kv_heads=12,
        intermediate_size=2048,
        text_vocab_size=8192,
        max_seq_len=640,
    ),
    # ILLUME's shapes: codebook 16384, 256 tokens per image, a 7B Llama-class (Vicuna-7B) LLM
    "illume-7b": IllumeConfig(
        name="illume-7b",
        image_size=256,
        patch_size=16,
        adapter_pool=1,
        vision_width=1024,
        vision_layers=24,
        vision_heads=16,
        codebook_size=16384,
        code_dim=32,
        decoder_width=256,
        hidden_size=4096,
        num_layers=32,
        num_heads=32,
        num_kv_heads=32,
        intermediate_size=11008,
        text_vocab_size=32000,
        max_seq_len=4096,
    ),
}


def get_preset(name: str, **overrides) -> IllumeConfig:
    """The named preset, optionally with some fields replaced (validated again)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    base = PRESETS[name]
    if not overrides:
        return base
    return IllumeConfig(**{**base.model_dump(), **overrides})
