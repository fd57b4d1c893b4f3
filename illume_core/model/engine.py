"""The inference engine: one loaded checkpoint answering batched requests as plain rows.

A Ray worker (tasks/pool.py) wraps exactly one Engine; tests and the CLI use it directly.
Requests and results are lists of dicts (prompt id, sample index, seed, PNG bytes, ...), so they
cross process boundaries cheaply and map straight onto the lake's tables. Every result depends
only on its own request (a seed per sample), never on batch composition or worker.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from illume_core.model.checkpoint import load_checkpoint
from illume_core.model.images import from_png, png_bytes, to_pil
from illume_core.model.sampling import IMAGE_SAMPLING, SamplingParams, answer, edit_images, generate_images
from illume_core.self_enhance.assessment import (
    DIMENSIONS,
    assessment_question,
    format_assessment,
    parse_assessment,
)
from illume_core.self_enhance.constrained import AssessmentGrammar
from illume_core.self_enhance.likelihood import LikelihoodMargins, assess_by_likelihood
from illume_core.train.stages import Parts
from illume_core.world.geneval import Metadata

Progress = Callable[[int, int], None]


def sample_seed(round: int, prompt_id: str, sample_index: int) -> int:
    """The seed of one sample: a function of (round, prompt id, sample index) only."""
    import hashlib

    h = hashlib.sha256(f"{round}/{prompt_id}/{sample_index}".encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


def _map_batches(
    items: Sequence[dict],
    size: int,
    rows_of: Callable[[Sequence[dict]], list[dict]],
    progress: Progress | None = None,
) -> list[dict]:
    """`rows_of` applied to consecutive chunks of `size` items, the rows in order; progress is
    reported as (rows so far, items) after each chunk."""
    out: list[dict] = []
    for i in range(0, len(items), size):
        out += rows_of(items[i : i + size])
        if progress:
            progress(len(out), len(items))
    return out


class Engine:
    """A checkpoint on a device: sample images, assess them, answer questions, edit images."""

    def __init__(self, checkpoint: str | Path, device: str = "cpu") -> None:
        self.checkpoint = str(checkpoint)
        self.device = device
        ck = load_checkpoint(checkpoint, device=device)
        self.parts = Parts.from_checkpoint(ck)
        self.checkpoint_id: str = ck.manifest["id"]
        self.cfg = ck.config

    @property
    def model(self):
        return self.parts.model

    @functools.cached_property
    def grammar(self) -> AssessmentGrammar:
        """The assessment grammar over this checkpoint's text tokenizer (masks built lazily)."""
        return AssessmentGrammar(self.parts.processor.tokenizer)

    @torch.no_grad()
    def draw(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        params: SamplingParams = IMAGE_SAMPLING,
    ) -> tuple[torch.Tensor, list]:
        """Codes (B, N) and PIL images for prompts, one seed each."""
        codes = generate_images(self.model, self.parts.processor, list(prompts), list(seeds), params)
        return codes, to_pil(self.parts.semantic.decode(codes.to(self.device)).cpu())

    def sample(
        self,
        items: list[dict],
        params: SamplingParams = IMAGE_SAMPLING,
        batch_size: int = 16,
        progress: Progress | None = None,
    ) -> list[dict]:
        """items: {prompt_id, prompt, sample_index, seed} -> + {png, image_tokens}."""

        def rows(chunk: Sequence[dict]) -> list[dict]:
            codes, images = self.draw([it["prompt"] for it in chunk], [it["seed"] for it in chunk], params)
            return [
                {**it, "png": png_bytes(im), "image_tokens": c}
                for it, c, im in zip(chunk, codes.tolist(), images, strict=True)
            ]

        return _map_batches(items, batch_size, rows, progress)

    def assess(
        self,
        items: list[dict],
        max_new_tokens: int = 64,
        batch_size: int = 16,
        progress: Progress | None = None,
        constrained: bool = True,
    ) -> list[dict]:
        """items: {prompt_id, sample_index, prompt, png} -> the model's own assessment rows.

        `constrained` (the default) decodes under the assessment grammar (illume_core/self_enhance/constrained.py):
        the model picks verdicts and reasons, the keys and separators are fixed; False lets it
        write freely (ILLUME's way, and the ablation). Unparseable answers come back with
        parse_status 'failed' or 'partial' and their raw text, never an exception: one bad
        answer must not cost the batch.
        """
        grammar = self.grammar if constrained else None

        def rows(chunk: Sequence[dict]) -> list[dict]:
            texts = answer(
                self.model,
                self.parts.processor,
                [from_png(it["png"]) for it in chunk],
                [assessment_question(it["prompt"]) for it in chunk],
                max_new_tokens=max_new_tokens,
                grammar=grammar,
            )
            return [
                {**{k: v for k, v in it.items() if k != "png"}, **assessment_fields(text)}
                for it, text in zip(chunk, texts, strict=True)
            ]

        return _map_batches(items, batch_size, rows, progress)

    def assess_likelihood(
        self,
        items: list[dict],
        margins: dict | None = None,
        batch_size: int = 16,
        progress: Progress | None = None,
    ) -> list[dict]:
        """items: {prompt_id, sample_index, metadata (JSON), image_tokens} -> the model's own
        assessment rows, by the likelihood of each drawing under its prompt against prompts that
        change one dimension (illume_core/self_enhance/likelihood.py). The text is written in the assessment
        format, so it parses like the model's answers and trains like them."""
        m = LikelihoodMargins(**(margins or {}))
        dropped = ("png", "metadata", "image_tokens")

        def rows(chunk: Sequence[dict]) -> list[dict]:
            metas = [Metadata.model_validate_json(it["metadata"]) for it in chunk]
            codes = torch.tensor([list(it["image_tokens"]) for it in chunk], dtype=torch.long)
            judged = assess_by_likelihood(self.model, self.parts.processor, metas, codes, m)
            return [
                {
                    **{k: v for k, v in it.items() if k not in dropped},
                    **assessment_fields(format_assessment(a)),
                }
                for it, (a, _) in zip(chunk, judged, strict=True)
            ]

        return _map_batches(items, batch_size, rows, progress)

    def ask(self, items: list[dict], max_new_tokens: int = 32, batch_size: int = 32) -> list[dict]:
        """items: {id, png (or None), question} -> + {answer}."""

        def rows(chunk: Sequence[dict]) -> list[dict]:
            images = [from_png(it["png"]) if it.get("png") else None for it in chunk]
            questions = [it["question"] for it in chunk]
            texts = answer(self.model, self.parts.processor, images, questions, max_new_tokens=max_new_tokens)
            return [
                {**{k: v for k, v in it.items() if k != "png"}, "answer": t}
                for it, t in zip(chunk, texts, strict=True)
            ]

        return _map_batches(items, batch_size, rows)

    def edit(self, items: list[dict], batch_size: int = 16) -> list[dict]:
        """items: {id, png, instruction, seed} -> + {png_out}."""

        def rows(chunk: Sequence[dict]) -> list[dict]:
            codes = edit_images(
                self.model,
                self.parts.processor,
                [from_png(it["png"]) for it in chunk],
                [it["instruction"] for it in chunk],
                [it["seed"] for it in chunk],
            )
            pics = to_pil(self.parts.semantic.decode(codes.to(self.device)).cpu())
            return [{**it, "png_out": png_bytes(p)} for it, p in zip(chunk, pics, strict=True)]

        return _map_batches(items, batch_size, rows)


def assessment_fields(text: str) -> dict:
    """An assessment text as the lake's assessment columns (verdicts, reasons, raw text, status)."""
    parsed = parse_assessment(text)
    row: dict = {"raw_text": parsed.raw, "parse_status": parsed.status}
    for d in DIMENSIONS:
        da = parsed.dimensions.get(d)
        row[f"{d}_verdict"] = da.verdict if da else None
        row[f"{d}_reason"] = da.reason if da else ""
    return row
