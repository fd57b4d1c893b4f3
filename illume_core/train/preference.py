"""Preference training on a round's accepted / rejected images of one prompt (DPO).

ILLUME stores no preferences; the `preference` reformat strategy keeps, per prompt, an image
the assessor accepted beside one it rejected. Direct preference optimisation (Rafailov et al.,
2023) trains on such pairs without a reward model: with the round-start model frozen as the
reference, the loss is -log sigmoid(beta * ((log pi(c) - log ref(c)) - (log pi(r) - log ref(r))))
over the image-token sequences of the chosen c and rejected r. Pure torch; the training stage
and the round compose it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from illume_core.model.processor import Batch, Processor
from illume_core.model.unified import IllumeModel


@dataclass(frozen=True)
class PreferencePair:
    """One prompt with the codes of an accepted and a rejected image of it."""

    prompt: str
    chosen: torch.Tensor  # (N,) image codes
    rejected: torch.Tensor  # (N,)


def pair_batches(processor: Processor, pairs: Sequence[PreferencePair]) -> tuple[Batch, Batch]:
    """Text-to-image batches of the chosen and of the rejected images, row i of each the same prompt."""
    chosen = processor.collate([processor.text_to_image(p.prompt, p.chosen) for p in pairs])
    rejected = processor.collate([processor.text_to_image(p.prompt, p.rejected) for p in pairs])
    return chosen, rejected


def sequence_logprobs(model: IllumeModel, batch: Batch) -> torch.Tensor:
    """Summed log-probability of each row's labelled tokens (its image codes): (B,)."""
    return model.label_logprobs(batch).sum(1)


def dpo_loss(
    policy: IllumeModel, reference: IllumeModel, chosen: Batch, rejected: Batch, beta: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """The DPO loss (scalar) and each pair's implicit reward margin (B,), the reference frozen."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0; got {beta}")
    with torch.no_grad():
        ref_c, ref_r = sequence_logprobs(reference, chosen), sequence_logprobs(reference, rejected)
    margin = (sequence_logprobs(policy, chosen) - ref_c) - (sequence_logprobs(policy, rejected) - ref_r)
    return -F.logsigmoid(beta * margin).mean(), margin.detach()
