"""A shared driver for the training-loop tests: train_loop on a toy model, checkpointing every step."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from illume_core.train.loop import ParamGroup, TrainConfig, train_loop


def train_checkpointing_every_step(
    model: torch.nn.Module,
    data: Iterator,
    steps: int,
    loss_fn: Callable,
    progress: Callable[[int, float, float], None],
    saved: list[int],
):
    """train_loop over all of `model`'s parameters (one group, lr 1e-2) for `steps` steps,
    checkpointing after every step: each checkpoint's step is appended to `saved`."""
    return train_loop(
        model,
        [ParamGroup("all", list(model.parameters()), 1e-2)],
        data,
        TrainConfig(steps=steps),
        loss_fn=loss_fn,
        progress=progress,
        checkpoint_every=1,
        on_checkpoint=lambda s: saved.append(s.step),
    )
