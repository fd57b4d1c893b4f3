"""Shared builders for the model tests: a micro preset, a text tokenizer and a seeded model.

The micro preset is the tiny-256 preset shrunk further (32 px, 16 image tokens, 2 layers), so every
model test runs in well under a second on two shared cores.
"""

from __future__ import annotations

import functools
import random

import torch

from illume_core.model.config import IllumeConfig, get_preset
from illume_core.model.images import to_tensor
from illume_core.model.processor import Processor
from illume_core.model.text_tokenizer import TextTokenizer
from illume_core.model.unified import IllumeModel
from illume_core.world.scenes import render, sample_scene

MICRO = {
    "image_size": 32,
    "patch_size": 8,
    "adapter_pool": 1,
    "vision_width": 32,
    "vision_layers": 1,
    "vision_heads": 2,
    "codebook_size": 64,
    "code_dim": 8,
    "decoder_width": 16,
    "hidden_size": 64,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "intermediate_size": 128,
    "max_seq_len": 96,
}

TEXTS = [
    "a photo of two red circles",
    "a blue square left of a green cross",
    "how many circles are there?",
    "there are three yellow triangles",
    "object: yes; count: no, there are two; color: yes; spatial: yes",
]


def micro_config(**overrides) -> IllumeConfig:
    return get_preset("tiny-256", **{**MICRO, **overrides})


@functools.cache
def text_tokenizer() -> TextTokenizer:
    return TextTokenizer.train(TEXTS * 10, vocab_size=320)


def micro_model(seed: int = 0, **overrides) -> tuple[IllumeModel, Processor]:
    cfg = micro_config(**overrides)
    torch.manual_seed(seed)
    model = IllumeModel(cfg, text_tokenizer().vocab_size).eval()
    return model, Processor(cfg, text_tokenizer())


def scene_image(seed: int, size: int = 32) -> torch.Tensor:
    """A rendered ShapesWorld scene as (3, size, size) in [0, 1]."""
    return to_tensor([render(sample_scene(random.Random(seed), size=size, n_max=2))])[0]


def save_micro_checkpoint(path):
    """A micro model with an untrained tokenizer saved as a stage-3 checkpoint at `path`."""
    from illume_core.model.vision_tokenizer import SemanticTokenizer
    from illume_core.train.stages import Parts, save_stage

    model, proc = micro_model(max_seq_len=192)
    torch.manual_seed(0)
    parts = Parts(model, SemanticTokenizer(proc.cfg).eval(), proc.tokenizer, proc)
    save_stage(parts, path, "stage3")
    return parts
