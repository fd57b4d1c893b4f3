"""The unified multimodal model: one transformers Llama that reads and writes images.

Understanding path: `vision_model` (continuous features) -> `aligner` -> the <image> placeholder
positions, bridged by `prepare_inputs_embeds`. Generation path: the image-code rows of the LLM's
input embeddings and LM head (`gen_embed_rows`, `gen_head_rows`, `image_logits`). The semantic
tokenizer that turns images into codes stays outside: it is a separate, frozen part.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from illume_core.model.config import PATTERN_COLOURS, IllumeConfig
from illume_core.model.vision_encoder import VisionEncoder
from illume_core.train.recipes import PARAM_GROUPS  # the groups a recipe trains, with their learning rates


@dataclass
class IllumeOutput:
    """`loss` is None without labels; `logits` (B, T, V) over the whole vocab, computed on first use
    (the factorized model's loss never needs them). A dataclass of tensors, so that
    DistributedDataParallel finds the graph's outputs in it (with a plain class it found none,
    took every parameter for unused, and failed when their gradients arrived)."""

    loss: torch.Tensor | None
    hidden: torch.Tensor

    def __post_init__(self) -> None:
        self._model: IllumeModel | None = None
        self._logits: torch.Tensor | None = None

    @property
    def logits(self) -> torch.Tensor:
        if self._logits is None:
            self._logits = self._model.full_logits(self.hidden)
        return self._logits


def llama_config(cfg: IllumeConfig, vocab_size: int) -> LlamaConfig:
    """The LLM's transformers config for a preset and a total vocab (text + image codes)."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_seq_len,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


class Aligner(nn.Module):
    """The vision adapter: encoder features (I, grid^2, vision_width) -> LLM embeddings
    (I, understanding_tokens, hidden_size).

    Each `pool x pool` block of neighbouring cells is concatenated into one vector before the
    two-layer MLP (pool 1: one position per cell), so a fine encoder grid need not cost the LLM
    one input position per cell.
    """

    def __init__(self, vision_width: int, hidden_size: int, grid: int = 1, pool: int = 1) -> None:
        super().__init__()
        self.grid, self.pool = grid, pool
        self.fc1 = nn.Linear(vision_width * pool * pool, hidden_size)
        self.fc2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool > 1:  # (I, (h p w q), W) -> (I, (h w), (p q W)), row-major blocks
            x = rearrange(
                x, "i (h p w q) d -> i (h w) (p q d)", p=self.pool, q=self.pool, w=self.grid // self.pool
            )
        return self.fc2(F.gelu(self.fc1(x)))


class FactorizedCodes(nn.Module):
    """Input embeddings and output logits of pattern codes `m * colours + c`, factorized by part.

    Code 0 is the empty cell (background), with a logit of its own; every other code is an
    object mask m >= 1 in colour c, whose logit is the mask's plus the colour's log-probability
    (a softmax over colours). So p(code) = p(background), or p(mask) p(colour | object): the
    colour head learns from object cells only. (With background as mask 0 in colour 0, the colour head put
    most of its mass on colour 0 wherever a cell might be background, and sampled objects came
    out in that colour: red fragments, docs/BASE_MODEL.md.) Codes 1..colours-1 (the empty mask
    in another colour) never occur; their logit is a floor far below any other. The 16,380 codes of the tiny preset
    cost 1,648 rows, and what the LLM learns about a mask (an edge, a corner) holds in every colour.
    """

    def __init__(self, masks: int, colours: int, hidden_size: int, cell_pixels: int) -> None:
        super().__init__()
        self.colours = colours
        self.embed_mask = nn.Embedding(masks, hidden_size)
        self.embed_colour = nn.Embedding(colours, hidden_size)
        self.head_mask = nn.Linear(hidden_size, masks, bias=False)
        self.head_colour = nn.Linear(hidden_size, colours, bias=False)
        for w in (self.embed_mask.weight, self.embed_colour.weight):
            nn.init.normal_(w, std=0.02)
        # each mask's pixels (+1 object, -1 empty; row 0, the background, all -1), copied from
        # the fitted tokenizer by `set_mask_pixels`. A mask's rows are a free row plus a linear
        # map of its pixels, so what the LLM learns of one pixel pattern (an edge at this column)
        # holds for every mask that shares it: 1,638 masks need not be learned one by one.
        # Zero maps: a model built without masks behaves as the plain factorization.
        self.register_buffer("mask_pixels", torch.zeros(masks, cell_pixels))  # (M, P)
        self.pixel_in = nn.Linear(cell_pixels, hidden_size, bias=False)
        self.pixel_out = nn.Linear(hidden_size, cell_pixels, bias=False)
        nn.init.zeros_(self.pixel_in.weight)
        nn.init.zeros_(self.pixel_out.weight)

    @torch.no_grad()
    def set_mask_pixels(self, masks: torch.Tensor) -> None:
        """Copy the tokenizer's masks (M, P) in {0, 1} into the pixel structure of the rows."""
        if masks.shape != self.mask_pixels.shape:
            raise ValueError(
                f"masks {tuple(masks.shape)} do not fit the code rows {tuple(self.mask_pixels.shape)}"
            )
        self.mask_pixels.copy_(masks.to(self.mask_pixels) * 2 - 1)

    def mask_rows(self, which: str) -> torch.Tensor:
        """Every mask's input embedding ('embed') or head vector ('head'): (M, D)."""
        if which == "embed":
            return self.embed_mask.weight + self.pixel_in(self.mask_pixels)
        # logit(m) = h . head[m] + (pixel_out h) . pixels[m] = h . (head[m] + pixels[m] @ pixel_out)
        return self.head_mask.weight + self.mask_pixels @ self.pixel_out.weight

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (...) -> embeddings (..., D); the background has no colour part."""
        mask = codes // self.colours
        colour = self.embed_colour(codes % self.colours) * (mask > 0).unsqueeze(-1)
        return F.embedding(mask, self.mask_rows("embed")) + colour

    def parts(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits (..., M) (index 0: background) and colour logits (..., C)."""
        return hidden @ self.mask_rows("head").to(hidden.dtype).T, self.head_colour(hidden)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Joint logits (..., M * C), index = code id; a floor for the codes that never occur."""
        mask, colour = self.parts(hidden)
        joint = mask.unsqueeze(-1) + colour.log_softmax(-1).unsqueeze(-2)  # (..., M, C)
        # a large finite floor, not -inf: classifier-free guidance takes differences of logits,
        # and -inf - -inf is nan
        empty = torch.full_like(joint[..., 0, :], torch.finfo(joint.dtype).min / 4)
        empty[..., 0] = mask[..., 0]
        return torch.cat([empty.unsqueeze(-2), joint[..., 1:, :]], -2).flatten(-2)

    def log_probs(self, hidden: torch.Tensor, codes: torch.Tensor, text_lse: torch.Tensor) -> tuple:
        """(log-numerator of each code (M,), log of the code part of the partition (M,)) for
        hidden (M, D); the caller adds the text part (`text_lse`) to the partition."""
        mask, colour = (x.float() for x in self.parts(hidden))  # (M, Mk), (M, C)
        colour = colour.log_softmax(-1)  # p(colour | object)
        log_z = torch.logaddexp(text_lse, mask.logsumexp(-1))
        m = codes // self.colours
        num = mask.gather(1, m[:, None])[:, 0] + torch.where(
            m > 0, colour.gather(1, (codes % self.colours)[:, None])[:, 0], 0.0
        )
        return num, log_z

    def rows(self, which: str) -> torch.Tensor:
        """Every code's embedding ('embed') or head vector ('head', the mask's plus the colour's
        row: the code's logit is hidden @ that row less the colour softmax's log-partition) as
        (M * C, D); the background's is its mask row alone."""
        mask = self.mask_rows(which)
        colour = self.embed_colour.weight if which == "embed" else self.head_colour.weight
        out = (mask.unsqueeze(1) + colour.unsqueeze(0)).flatten(0, 1)
        return torch.cat([mask[:1], out[1:]])  # the background: its mask row alone


class IllumeModel(nn.Module):
    """Vision encoder + adapter + a Llama whose vocab is the text vocab followed by the image codes.

    Image code k has LLM id `image_token_offset + k`, with `image_token_offset = text_vocab_size`.
    With the semantic tokenizer, the codes are extra rows of the Llama's embedding and LM head;
    with the pattern tokenizer, the Llama keeps a text-only vocab and the codes' rows are the
    factorized `gen_codes` (mask part + colour part). `llm_config` rebuilds the exact LLM of a
    checkpoint; otherwise the LLM comes from `cfg.pretrained_path` (transformers
    `from_pretrained`, vocab extended) or from the preset.
    """

    def __init__(
        self, cfg: IllumeConfig, text_vocab_size: int, llm_config: LlamaConfig | None = None
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.text_vocab_size = text_vocab_size
        self.image_token_offset = text_vocab_size
        self.vocab_size = text_vocab_size + cfg.codebook_size
        self.factorized = cfg.tokenizer == "pattern"
        llm_vocab = text_vocab_size if self.factorized else self.vocab_size
        # understanding path
        self.vision_model = VisionEncoder(cfg)
        self.aligner = Aligner(cfg.vision_width, cfg.hidden_size, cfg.grid, cfg.adapter_pool)
        # the language model; its image-code rows are the generation path
        if llm_config is not None:
            self.llm = LlamaForCausalLM(llm_config)
        elif cfg.pretrained_path is not None:
            self.llm = _load_pretrained(cfg, llm_vocab)
        else:
            self.llm = LlamaForCausalLM(llama_config(cfg, llm_vocab))
        if self.llm.config.vocab_size != llm_vocab:
            raise ValueError(
                f"LLM vocab {self.llm.config.vocab_size} != {llm_vocab} (text {text_vocab_size}"
                f"{'' if self.factorized else f' + codes {cfg.codebook_size}'}); "
                "build the model with the text tokenizer's vocab_size"
            )
        # generation path of the pattern tokenizer: factorized code rows beside the text-only Llama
        self.gen_codes = (
            FactorizedCodes(cfg.code_masks, PATTERN_COLOURS, cfg.hidden_size, cfg.gen_cell * cfg.gen_cell)
            if self.factorized
            else None
        )
        self._grad_hooks: list[torch.utils.hooks.RemovableHandle] = []

    # ---- understanding path ----------------------------------------------------------------
    def prepare_inputs_embeds(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings (B, T, D) with adapter outputs scattered into the <image> positions.

        input_ids (B, T); pixel_values (I, 3, H, W), the images in order of appearance;
        image_mask (B, T) bool, True at the I * cfg.understanding_tokens placeholder positions.
        """
        embeds = self.embed_ids(input_ids)  # (B, T, D)
        if pixel_values is None or image_mask is None or not bool(image_mask.any()):
            return embeds
        feats = self.aligner(self.vision_model(pixel_values))  # (I, N, D)
        n_slots, n_feats = int(image_mask.sum()), feats.shape[0] * feats.shape[1]
        if n_slots != n_feats:
            raise ValueError(
                f"{n_slots} <image> placeholders but {feats.shape[0]} images x {feats.shape[1]} features; "
                "build batches with the Processor so each image gets cfg.understanding_tokens placeholders"
            )
        # masked_scatter fills the True positions in row-major order: batch row, then position
        return embeds.masked_scatter(image_mask.unsqueeze(-1), feats.to(embeds.dtype))  # (B, T, D)

    # ---- token embeddings (text and image codes) ---------------------------------------------
    def embed_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings of LLM ids (B, T) -> (B, T, D), text ids and image codes alike."""
        if not self.factorized:
            return self.llm.get_input_embeddings()(input_ids)  # (B, T, D)
        is_code = input_ids >= self.image_token_offset  # (B, T)
        text = self.llm.get_input_embeddings()(torch.where(is_code, 0, input_ids))  # (B, T, D)
        codes = self.gen_codes.embed((input_ids - self.image_token_offset).clamp(min=0))  # (B, T, D)
        return torch.where(is_code.unsqueeze(-1), codes, text)

    # ---- generation path -------------------------------------------------------------------
    def gen_embed_rows(self) -> torch.Tensor:
        """The image codes' input embeddings (codebook_size, D) (a view when not factorized)."""
        if self.factorized:
            return self.gen_codes.rows("embed")
        return self.llm.get_input_embeddings().weight[self.image_token_offset :]

    def gen_head_rows(self) -> torch.Tensor:
        """The image codes' LM-head vectors (codebook_size, D) (a view when not factorized)."""
        if self.factorized:
            return self.gen_codes.rows("head")
        return self.llm.get_output_embeddings().weight[self.image_token_offset :]

    def image_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over image codes only: hidden (..., D) -> (..., codebook_size), index = code id."""
        if self.factorized:
            return self.gen_codes.logits(hidden)  # (..., K)
        return hidden @ self.gen_head_rows().T  # (..., K)

    def text_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over text ids only: hidden (..., D) -> (..., text_vocab_size)."""
        return hidden @ self.llm.get_output_embeddings().weight[: self.image_token_offset].T  # (..., Vt)

    def full_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the whole id space (text, then image codes): (..., D) -> (..., V)."""
        if not self.factorized:
            return self.llm.lm_head(hidden)
        return torch.cat([self.text_logits(hidden), self.image_logits(hidden)], -1)

    # ---- the shared trunk ------------------------------------------------------------------
    def hidden_states(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        cache=None,
    ) -> torch.Tensor:
        """Final-norm hidden states (B, T, D) of the LLM body; `cache` (a transformers Cache) is
        extended in place when given."""
        out = self.llm.model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=cache is not None,
        )
        return out.last_hidden_state  # (B, T, D)

    def forward(self, batch) -> IllumeOutput:
        """Loss and logits for a `processor.Batch`: next-token cross-entropy where labels != -100.

        Labels are aligned with input_ids (label t is the target of token t); the shift happens here.
        """
        embeds = self.prepare_inputs_embeds(batch.input_ids, batch.pixel_values, batch.image_mask)
        hidden = self.hidden_states(embeds, batch.attention_mask, batch.position_ids)  # (B, T, D)
        out = IllumeOutput(None, hidden)
        out._model = self
        if batch.labels is None:
            return out
        labels = batch.labels[:, 1:]  # (B, T-1)
        if not self.factorized:
            out.loss = F.cross_entropy(
                out.logits[:, :-1].flatten(0, 1).float(),  # (B*(T-1), V)
                labels.flatten(),  # (B*(T-1),)
                ignore_index=-100,
            )
            return out
        out.loss = -self.target_logprobs(hidden[:, :-1][labels != -100], labels[labels != -100]).mean()
        return out

    def label_logprobs(self, batch) -> torch.Tensor:
        """Log-probability of each labelled next token (B, T-1), 0 where the label is -100."""
        embeds = self.prepare_inputs_embeds(batch.input_ids, batch.pixel_values, batch.image_mask)
        hidden = self.hidden_states(embeds, batch.attention_mask, batch.position_ids)[:, :-1]  # (B, T-1, D)
        labels = batch.labels[:, 1:]  # (B, T-1)
        keep = labels != -100
        out = torch.zeros(labels.shape, dtype=torch.float32, device=hidden.device)
        if self.factorized:
            out[keep] = self.target_logprobs(hidden[keep], labels[keep])
        else:
            logp = torch.log_softmax(self.llm.lm_head(hidden[keep]).float(), -1)  # (M, V)
            out[keep] = logp.gather(1, labels[keep][:, None])[:, 0]
        return out

    def target_logprobs(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (M,) of target LLM ids (M,) after hidden states (M, D), over the whole
        id space, without expanding the factorized code logits.

        log Z = logaddexp(lse(text), lse(masks)), and an object code's logit is its mask's plus
        its colour's log-probability: exactly the log-softmax of `full_logits`.
        """
        text = self.text_logits(hidden).float()  # (M, Vt)
        is_code = targets >= self.image_token_offset
        code = (targets - self.image_token_offset).clamp(min=0)
        code_logit, log_z = self.gen_codes.log_probs(hidden, code, text.logsumexp(-1))  # (M,), (M,)
        text_logit = text.gather(1, torch.where(is_code, 0, targets)[:, None])[:, 0]
        return torch.where(is_code, code_logit, text_logit) - log_z

    # ---- what each training stage trains ---------------------------------------------------
    def hidden_matrices(self) -> list[nn.Parameter]:
        """The weight matrices inside the LLM's layers and the adapter: what Muon may train
        (train.loop.MuonAdamW); embeddings, heads, code rows and norms are left to AdamW."""
        layers = [m for m in self.llm.model.layers.modules() if isinstance(m, nn.Linear)]
        layers += [m for m in self.aligner.modules() if isinstance(m, nn.Linear)]
        return [m.weight for m in layers]

    def param_groups(self, stage: int, lrs: dict[str, float]) -> list[dict]:
        """Optimizer groups for a stage; also freezes every parameter no group trains.

        `lrs` (a recipe's, illume_core/train/recipes.py) names the trained groups and their learning rates:
        'adapter' (aligner), 'vision' (the encoder), 'llm' (the LLM; without its embedding and
        head matrices when 'image_embed_head' is trained too), 'image_embed_head' (embed_tokens
        and lm_head). When 'image_embed_head' is trained with the LLM frozen (stage 1), only the
        image-code rows may learn, but they are rows of matrices shared with the text rows: the
        whole matrices join the optimizer under a gradient hook that zeroes the text rows'
        gradients, with weight_decay 0 so AdamW leaves the text rows exactly unchanged.
        Each group is a dict (name, params, lr[, weight_decay]) for torch.optim.AdamW.
        """
        unknown = sorted(set(lrs) - set(PARAM_GROUPS))
        if unknown:
            raise ValueError(f"unknown parameter groups {unknown}; choose from {PARAM_GROUPS}")
        for h in self._grad_hooks:
            h.remove()
        self._grad_hooks = []
        self.requires_grad_(False)
        # one entry per matrix even if a pretrained LLM ties embeddings and head
        emb_head = list(
            {
                id(p): p
                for p in (self.llm.get_input_embeddings().weight, self.llm.get_output_embeddings().weight)
            }.values()
        )
        if self.factorized:
            # the code rows are modules of their own: trained without the LLM (stage 1), they are
            # the whole group and no text row needs masking; with it, they join the text rows
            codes = list(self.gen_codes.parameters())
            emb_head = codes if "llm" not in lrs else [*emb_head, *codes]
        groups: list[dict] = []
        if "adapter" in lrs:
            groups.append(
                {"name": "adapter", "params": list(self.aligner.parameters()), "lr": lrs["adapter"]}
            )
        if "vision" in lrs:
            groups.append(
                {"name": "vision", "params": list(self.vision_model.parameters()), "lr": lrs["vision"]}
            )
        if "llm" in lrs:
            skip = {id(p) for p in emb_head} if "image_embed_head" in lrs else set()
            body = [p for p in self.llm.parameters() if id(p) not in skip]
            if self.factorized and "image_embed_head" not in lrs:
                body += list(self.gen_codes.parameters())
            groups.append({"name": "llm", "params": body, "lr": lrs["llm"]})
        if "image_embed_head" in lrs:
            group = {"name": "image_embed_head", "params": emb_head, "lr": lrs["image_embed_head"]}
            if "llm" not in lrs:
                group["weight_decay"] = 0.0
            groups.append(group)
        for g in groups:
            for p in g["params"]:
                p.requires_grad_(True)
        if "image_embed_head" in lrs and "llm" not in lrs and not self.factorized:
            self._grad_hooks = [p.register_hook(self._mask_text_rows) for p in emb_head]
        return groups

    def _mask_text_rows(self, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[: self.image_token_offset] = 0  # (V, D): only the image-code rows learn
        return grad


def _load_pretrained(cfg: IllumeConfig, vocab_size: int) -> LlamaForCausalLM:
    """Real weights from a local folder, their vocab extended with the image codes."""
    llm = LlamaForCausalLM.from_pretrained(cfg.pretrained_path, local_files_only=True)
    got = (llm.config.hidden_size, llm.config.num_hidden_layers)
    if got != (cfg.hidden_size, cfg.num_layers):
        raise ValueError(
            f"weights at {cfg.pretrained_path} have hidden_size x layers {got}, the preset "
            f"{cfg.name!r} has {(cfg.hidden_size, cfg.num_layers)}; pick a preset with the weights' shapes"
        )
    if llm.config.vocab_size > vocab_size:
        raise ValueError(
            f"weights at {cfg.pretrained_path} have {llm.config.vocab_size} text ids, more than the "
            f"{vocab_size} of text + image codes; use their tokenizer's vocab size as text_vocab_size"
        )
    llm.resize_token_embeddings(vocab_size, mean_resizing=False)
    return llm


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (works on the meta device)."""
    return sum(p.numel() for p in module.parameters())
