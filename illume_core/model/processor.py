"""The processor: special tokens, prompt templates, padding side and batching for every task.

Each task (caption, VQA, text-to-image and its unconditional twin, editing, reconstruction,
assessment, plain text) is one template; an `Example` holds one conversation's ids, its labels
(-100 on the prompt) and its input images; `collate` pads examples into a typed `Batch` (right
padding for training, left padding for generation, so every row's last token is its newest one).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import torch
from PIL import Image

from illume_core.model.config import IllumeConfig
from illume_core.model.images import to_tensor
from illume_core.model.text_tokenizer import SPECIAL_TOKENS, TextTokenizer

IGNORE_INDEX = -100  # label of a position that is not trained on (prompt, padding)
CFG_DROP_PROB = 0.1  # ILLUME drops the text condition of 10% of text-to-image examples

# templates: "<image>" stands for cfg.understanding_tokens placeholder positions; answers follow <assistant>
CAPTION_PROMPT = "<user> <image> describe the image. <assistant>"
VQA_PROMPT = "<user> <image> {question} <assistant>"
T2I_PROMPT = "<user> generate an image: {prompt} <assistant> <soi>"
UNCOND_PROMPT = "<user> generate a random image <assistant> <soi>"
EDIT_PROMPT = "<user> <image> {instruction} <assistant> <soi>"
RECONSTRUCT_PROMPT = "<user> <image> reconstruct the image. <assistant> <soi>"

ImageLike = torch.Tensor | Image.Image


@dataclass
class Example:
    """One conversation: token ids, aligned labels (-100 = not a target) and its input images."""

    ids: list[int]
    labels: list[int]
    images: list[torch.Tensor] = field(default_factory=list)  # each (3, H, W) in [0, 1]


@dataclass
class Batch:
    """Padded examples. image_mask marks the <image> placeholders, filled from pixel_values in order."""

    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long, 0 on padding
    position_ids: torch.Tensor  # (B, T) long, counting real tokens only
    labels: torch.Tensor  # (B, T) long, -100 on prompt and padding
    image_mask: torch.Tensor  # (B, T) bool
    pixel_values: torch.Tensor | None  # (I, 3, H, W) in [0, 1], None without input images

    def to(self, device: torch.device | str) -> Batch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return Batch(**{k: v.to(device) if v is not None else None for k, v in moved.items()})

    def __len__(self) -> int:
        return self.input_ids.shape[0]


class Processor:
    """Builds examples and batches for one preset and one text tokenizer."""

    def __init__(self, cfg: IllumeConfig, tokenizer: TextTokenizer) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.image_token_offset = tokenizer.vocab_size  # image code k is LLM id offset + k

    # ---- training examples -----------------------------------------------------------------
    def caption(self, image: ImageLike, caption: str) -> Example:
        return self._text_answer(CAPTION_PROMPT, [image], caption)

    def vqa(self, image: ImageLike, question: str, answer: str) -> Example:
        return self._text_answer(VQA_PROMPT.format(question=_clean(question)), [image], answer)

    def assessment(self, image: ImageLike, prompt: str, assessment) -> Example:
        """The model's self-assessment of `image` against its `prompt`; answer = format_assessment."""
        from illume_core.self_enhance.assessment import assessment_question, format_assessment

        question = assessment_question(prompt)
        return self._text_answer(
            VQA_PROMPT.format(question=_clean(question)), [image], format_assessment(assessment)
        )

    def text_to_image(
        self,
        prompt: str,
        codes: torch.Tensor,
        rng: random.Random | None = None,
        drop_prob: float = CFG_DROP_PROB,
    ) -> Example:
        """Prompt -> image codes (N,). With `rng`, the prompt becomes the unconditional one with
        probability `drop_prob`, which is what makes classifier-free guidance possible."""
        unconditional = rng is not None and rng.random() < drop_prob
        return self._image_answer(self._t2i_text(None if unconditional else prompt), [], codes)

    def edit(self, image: ImageLike, instruction: str, codes: torch.Tensor) -> Example:
        """Image in (continuous) + instruction -> the edited image's codes (N,)."""
        return self._image_answer(EDIT_PROMPT.format(instruction=_clean(instruction)), [image], codes)

    def reconstruction(self, image: ImageLike, codes: torch.Tensor) -> Example:
        """Image in (continuous) -> its own codes (N,): stage 1's bridge between the two paths."""
        return self._image_answer(RECONSTRUCT_PROMPT, [image], codes)

    def text(self, text: str) -> Example:
        """Plain text, every token a target (stage 2's text-only data)."""
        ids = [self.tokenizer.bos_id, *self.tokenizer.encode(_clean(text)), self.tokenizer.eos_id]
        return self._check(Example(ids, [IGNORE_INDEX, *ids[1:]]))

    # ---- inference prompts (no answer; the sampler continues them) --------------------------
    def t2i_prompt(self, prompt: str | None) -> Example:
        """Text-to-image prompt ending in <soi>; None gives the unconditional twin."""
        return self._prompt(self._t2i_text(prompt), [])

    def question_prompt(self, image: ImageLike | None, question: str) -> Example:
        if image is None:
            return self._prompt(f"<user> {_clean(question)} <assistant>", [])
        return self._prompt(VQA_PROMPT.format(question=_clean(question)), [image])

    def edit_prompt(self, image: ImageLike, instruction: str) -> Example:
        return self._prompt(EDIT_PROMPT.format(instruction=_clean(instruction)), [image])

    # ---- batching ----------------------------------------------------------------------------
    def collate(self, examples: Sequence[Example], padding_side: str = "right") -> Batch:
        """Pad examples into a Batch: 'right' for training, 'left' for generation."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if not examples:
            raise ValueError("collate needs at least one example")
        width = max(len(e.ids) for e in examples)
        pad = self.tokenizer.pad_id
        ids = torch.full((len(examples), width), pad, dtype=torch.long)  # (B, T)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(examples), width), dtype=torch.long)  # (B, T)
        for i, e in enumerate(examples):
            span = slice(width - len(e.ids), width) if padding_side == "left" else slice(0, len(e.ids))
            ids[i, span] = torch.tensor(e.ids)
            labels[i, span] = torch.tensor(e.labels)
            mask[i, span] = 1
        position_ids = (mask.cumsum(1) - 1).clamp(min=0)  # (B, T)
        images = [im for e in examples for im in e.images]
        pixel_values = torch.stack(images) if images else None  # (I, 3, H, W)
        image_mask = (ids == self.tokenizer.image_id) & mask.bool()  # (B, T)
        return Batch(ids, mask, position_ids, labels, image_mask, pixel_values)

    def code_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Image codes in [0, codebook_size) -> LLM ids."""
        return codes + self.image_token_offset

    # ---- internals ---------------------------------------------------------------------------
    def _t2i_text(self, prompt: str | None) -> str:
        return UNCOND_PROMPT if prompt is None else T2I_PROMPT.format(prompt=_clean(prompt))

    def _prompt(self, template: str, images: Sequence[ImageLike]) -> Example:
        ids = [self.tokenizer.bos_id, *self.tokenizer.encode(template)]
        n_ph = ids.count(self.tokenizer.image_id)
        if n_ph != len(images):
            raise ValueError(f"template has {n_ph} <image> placeholders but {len(images)} images were given")
        expanded: list[int] = []
        for i in ids:  # one placeholder per image feature
            expanded.extend([i] * self.cfg.understanding_tokens if i == self.tokenizer.image_id else [i])
        return Example(expanded, [IGNORE_INDEX] * len(expanded), [self._pixels(im) for im in images])

    def _text_answer(self, template: str, images: Sequence[ImageLike], answer: str) -> Example:
        ex = self._prompt(template, images)
        target = [*self.tokenizer.encode(_clean(answer)), self.tokenizer.eos_id]
        return self._check(Example(ex.ids + target, ex.labels + target, ex.images))

    def _image_answer(self, template: str, images: Sequence[ImageLike], codes: torch.Tensor) -> Example:
        codes = torch.as_tensor(codes).flatten()
        n, k = self.cfg.image_tokens, self.cfg.codebook_size
        if codes.numel() != n or int(codes.min()) < 0 or int(codes.max()) >= k:
            raise ValueError(
                f"an output image is {n} codes in [0, {k}); got {codes.numel()} codes in "
                f"[{int(codes.min())}, {int(codes.max())}]; encode images with the preset's SemanticTokenizer"
            )
        ex = self._prompt(template, images)
        target = [*self.code_ids(codes).tolist(), self.tokenizer.eoi_id, self.tokenizer.eos_id]
        return self._check(Example(ex.ids + target, ex.labels + target, ex.images))

    def _pixels(self, image: ImageLike) -> torch.Tensor:
        x = to_tensor([image])[0] if isinstance(image, Image.Image) else image.float()  # (3, H, W)
        size = self.cfg.image_size
        if x.shape != (3, size, size):
            raise ValueError(
                f"images must be (3, {size}, {size}) for preset {self.cfg.name!r}; got {tuple(x.shape)}"
            )
        return x

    def _check(self, ex: Example) -> Example:
        if len(ex.ids) > self.cfg.max_seq_len:
            raise ValueError(
                f"example of {len(ex.ids)} tokens exceeds max_seq_len {self.cfg.max_seq_len}; shorten the text"
            )
        return ex


def _clean(text: str) -> str:
    """User text may not smuggle special tokens into a template."""
    for tok in SPECIAL_TOKENS:
        text = text.replace(tok, " ")
    return text.strip()
