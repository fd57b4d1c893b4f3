"""Running ILLUME's training stages on the model's parts, from tokenizer training to stage 3.

`pretrain_vision` makes the text-aligned encoder and the semantic tokenizer; `init_model` trains
the text tokenizer and builds the unified model around that encoder; `fit_stage` runs one
recipe (stage 0..3, or a round's fine-tuning) through the shared training loop and
`save_stage` writes the result as a checkpoint. Orchestration calls these; they know nothing of it.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from illume_core.model.checkpoint import CheckpointInfo, LoadedCheckpoint, save_checkpoint
from illume_core.model.config import IllumeConfig
from illume_core.model.processor import Processor
from illume_core.model.text_tokenizer import TextTokenizer
from illume_core.model.unified import IllumeModel
from illume_core.model.vision_tokenizer import PatternTokenizer, SemanticTokenizer
from illume_core.settings import VisionBudget
from illume_core.train.data import BaseCorpus, SelfExample, StageData
from illume_core.train.loop import ParamGroup, TrainConfig, TrainState, train_loop
from illume_core.train.preference import PreferencePair, dpo_loss, pair_batches
from illume_core.train.recipes import StageRecipe
from illume_core.train.vision import train_encoder, train_tokenizer
from illume_core.world import corpus


@dataclass
class Parts:
    """Everything a checkpoint holds, in memory."""

    model: IllumeModel
    semantic: SemanticTokenizer | PatternTokenizer  # the preset's vision tokenizer (frozen)
    text_tokenizer: TextTokenizer
    processor: Processor

    @property
    def cfg(self) -> IllumeConfig:
        return self.model.cfg

    @classmethod
    def from_checkpoint(cls, ck: LoadedCheckpoint) -> Parts:
        if ck.semantic_tokenizer is None:
            raise ValueError("this checkpoint has no semantic tokenizer; it cannot draw images")
        return cls(
            ck.model, ck.semantic_tokenizer, ck.text_tokenizer, Processor(ck.config, ck.text_tokenizer)
        )


def pretrain_vision(
    cfg: IllumeConfig,
    budget: VisionBudget,
    seed: int = 0,
    progress: Callable[[str, int, dict], None] | None = None,
) -> SemanticTokenizer | PatternTokenizer:
    """Contrastive encoder pretraining, then the preset's tokenizer on the frozen encoder.

    The returned tokenizer holds the frozen encoder; `init_model` copies it into the
    understanding path (ILLUME starts both from the same pretrained encoder).
    """
    enc = train_encoder(
        cfg,
        budget.encoder_steps,
        budget.batch_size,
        seed,
        progress=(lambda s, m: progress("encoder", s, m)) if progress else None,
    )
    return train_tokenizer(
        cfg,
        enc,
        budget.tokenizer_steps,
        max(8, budget.batch_size // 2),
        seed,
        progress=(lambda s, m: progress("tokenizer", s, m)) if progress else None,
        scenes=budget.tokenizer_scenes,
    )


def shared_vision(
    cfg: IllumeConfig, checkpoint: str | Path
) -> tuple[SemanticTokenizer | PatternTokenizer, str]:
    """The trained vision tokenizer (with its encoder) of another run's checkpoint, and its id.

    Refused unless that checkpoint's vision fields (`config.VISION_FIELDS`) equal this run's: an
    encoder or codebook of another shape would not fit, and one of another grid or tokenizer
    would silently change what this run trains. The adapter and the LLM may differ: this run
    builds its own.
    """
    from illume_core.model.checkpoint import load_checkpoint

    ck = load_checkpoint(checkpoint)
    theirs, ours = ck.config.vision_part(), cfg.vision_part()
    if theirs != ours:
        diff = sorted(k for k, v in ours.items() if theirs[k] != v)
        raise ValueError(
            f"--vision-from {checkpoint}: that checkpoint's vision configuration "
            f"({ck.config.name}) differs from this run's ({cfg.name}) in {diff}; "
            "share vision only between runs of the same preset"
        )
    if ck.semantic_tokenizer is None:
        raise ValueError(f"--vision-from {checkpoint}: that checkpoint has no vision tokenizer")
    return ck.semantic_tokenizer, ck.manifest["id"]


def init_model(
    cfg: IllumeConfig, semantic: SemanticTokenizer | PatternTokenizer, seed: int = 0, n_text: int = 20000
) -> Parts:
    """Train the text tokenizer on ShapesWorld text and build the unified model around the encoder."""
    text_tok = TextTokenizer.train(corpus.text_corpus(seed, n_text), vocab_size=cfg.text_vocab_size)
    torch.manual_seed(seed)
    model = IllumeModel(cfg, text_tok.vocab_size)
    model.vision_model.load_state_dict(semantic.encoder.state_dict())
    if model.gen_codes is not None:  # the code rows know each mask's pixels
        model.gen_codes.set_mask_pixels(semantic.masks)
    return Parts(model, semantic, text_tok, Processor(cfg, text_tok))


def stage_groups(model: IllumeModel, recipe: StageRecipe) -> list[ParamGroup]:
    """The recipe's trainable groups (everything else frozen)."""
    if recipe.stage == 0:
        for p in model.parameters():
            p.requires_grad_(False)
        params = list(model.llm.parameters())
        for p in params:
            p.requires_grad_(True)
        return [ParamGroup("llm", params, recipe.lrs["llm"])]
    return [ParamGroup.from_dict(g) for g in model.param_groups(recipe.stage, recipe.lrs)]


def fit_stage(
    parts: Parts,
    recipe: StageRecipe,
    base: BaseCorpus,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    self_examples: Sequence[SelfExample] = (),
    preference_pairs: Sequence[PreferencePair] = (),
    state: dict | None = None,
    progress: Callable[[int, float, float], None] | None = None,
    checkpoint_every: int | None = None,
    on_checkpoint: Callable[[TrainState], None] | None = None,
    wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    precision: str = "auto",
) -> TrainState:
    """Run one recipe on the parts (in place). The semantic tokenizer stays frozen throughout.

    `precision` is `TrainConfig.precision` (auto: bf16 autocast where the device has native bf16).

    `wrap` (optional) wraps the model for the forward and backward passes (DistributedDataParallel).
    With `preference_pairs` and a recipe whose `preference_weight` is > 0, each step adds that
    weight times the DPO loss of a batch of pairs, against the model as it was when the stage
    started (frozen).
    """
    device = torch.device(device)
    parts.semantic.to(device).eval()
    for p in parts.semantic.parameters():
        p.requires_grad_(False)
    if recipe.steps is None:
        raise ValueError(
            f"recipe {recipe.name!r} has no step count; take it from a budget: get_recipe(name, preset, steps=N)"
        )
    groups = stage_groups(parts.model, recipe)
    data = StageData(base, parts.processor, parts.semantic.encode, recipe, seed, self_examples, device)
    cfg = TrainConfig(
        steps=recipe.steps, warmup_steps=recipe.warmup_steps, precision=precision, optimizer=recipe.optimizer
    )
    if state is not None:
        data.skip(int(state["step"]) * cfg.grad_accum)
    return train_loop(
        wrap(parts.model) if wrap else parts.model,
        groups,
        data,
        cfg,
        loss_fn=_loss_fn(parts, recipe, preference_pairs, seed, device),
        device=device,
        state=state,
        progress=progress,
        checkpoint_every=checkpoint_every,
        on_checkpoint=on_checkpoint,
    )


def _loss_fn(
    parts: Parts, recipe: StageRecipe, pairs: Sequence[PreferencePair], seed: int, device: torch.device
) -> Callable[[torch.nn.Module, object], torch.Tensor]:
    """The step's loss: next-token cross-entropy, plus weighted DPO when the round gave pairs."""
    if not pairs or recipe.preference_weight <= 0:
        return lambda m, b: m(b).loss
    reference = copy.deepcopy(parts.model).eval().requires_grad_(False)
    rng = random.Random(f"preference/{recipe.name}/{seed}")
    per_step = max(1, min(len(pairs), recipe.batch_size // 4))

    def loss(m: torch.nn.Module, batch) -> torch.Tensor:
        chosen, rejected = pair_batches(parts.processor, rng.sample(list(pairs), per_step))
        # the DPO term runs on the bare model: under data parallelism its gradients stay local
        policy = getattr(m, "module", m)
        dpo, _ = dpo_loss(policy, reference, chosen.to(device), rejected.to(device), recipe.preference_beta)
        return m(batch).loss + recipe.preference_weight * dpo

    return loss


def save_stage(
    parts: Parts,
    directory: str | Path,
    stage: str,
    parent: str | None = None,
    state: TrainState | None = None,
    extra: dict | None = None,
) -> CheckpointInfo:
    """Write the parts as a checkpoint (with optimizer state when given, for resuming)."""
    extra = dict(extra or {})
    if state is not None:
        extra["train_step"] = state.step
    return save_checkpoint(
        directory,
        parts.model.cpu(),
        parts.semantic.cpu(),
        parts.text_tokenizer,
        stage=stage,
        parent=parent,
        optimizer=state.optimizer if state else None,
        extra=extra,
    )
