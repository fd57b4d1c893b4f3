"""Training jobs: one stage run from a parent checkpoint to a new one, resumable after a crash.

A job saves a resumable checkpoint (weights + optimizer moments) a few times per run under
`<checkpoints>/_resume/<key>/`, where the key is a digest of everything that defines the run;
started again with the same arguments, it continues from there instead of starting over. The
finished checkpoint lands in `<checkpoints>/<content id>/`. Orchestration (a Prefect task, a Ray
actor) calls `run_stage`; it knows nothing of either.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from illume_core.model.checkpoint import load_checkpoint, load_optimizer_state, read_manifest
from illume_core.self_enhance.reformat import resolve, resolve_preferences
from illume_core.settings import PipelineSettings
from illume_core.train.data import BaseCorpus
from illume_core.train.recipes import get_recipe
from illume_core.train.stages import Parts, fit_stage, save_stage

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    """A finished stage: the checkpoint folder, its id, the losses and the compute it took."""

    path: str
    checkpoint_id: str
    losses: list[float] = field(default_factory=list)
    resumed_from: int = 0
    compute_seconds: float = 0.0


def _reporter(progress: Callable[[int, int], None] | None, path: str | None, total: int):
    """A train-loop progress callback: the caller's, plus a small JSON file another process can poll."""
    if progress is None and path is None:
        return None
    every = max(1, total // 20)

    def report(step: int, loss: float, lr: float) -> None:
        if progress is not None:
            progress(step, total)
        if path is not None and (step % every == 0 or step == total):
            tmp = f"{path}.tmp"
            try:  # a view for the caller: a trainer on a node without the caller's folder goes on
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
                with open(tmp, "w") as f:
                    json.dump({"step": step, "total": total, "loss": loss}, f)
                os.replace(tmp, path)
            except OSError:
                pass

    return report


def job_key(
    stage: str,
    parent_id: str,
    settings: PipelineSettings,
    sft_key: str | None,
    steps: int,
    lr_scale: float = 1.0,
) -> str:
    """The resumable-checkpoint key of a stage job (the lr scale counts only when it is not 1)."""
    lr = f"|lr{lr_scale!r}" if lr_scale != 1.0 else ""
    return hashlib.sha256(
        f"{stage}|{parent_id}|{settings.digest()}|{sft_key}|{steps}{lr}".encode()
    ).hexdigest()[:16]


def store(parts: Parts, root: Path, stage: str, parent: str | None, extra: dict) -> tuple[str, str]:
    """Save parts under root/<content id>/ (an identical checkpoint already there is kept)."""
    tmp = root / f"_tmp-{uuid.uuid4().hex}"
    info = save_stage(parts, tmp, stage, parent=parent, extra=extra)
    final = root / info.id
    if final.exists():
        shutil.rmtree(tmp)
    else:
        os.rename(tmp, final)
    return str(final), info.id


def run_stage(
    settings: PipelineSettings,
    stage: str,
    parent: str | Path,
    checkpoints_root: str | Path,
    *,
    round: int = 0,
    sft_rows: Sequence[dict] = (),
    samples_by_key: dict[str, dict] | None = None,
    sft_key: str | None = None,
    steps: int | None = None,
    lr_scale: float = 1.0,
    device: str | None = None,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    progress_file: str | None = None,
    rank: int = 0,
    wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
) -> StageResult:
    """Train `stage` (stage0..3, or self_enhance = stage 3 plus the round's examples) from `parent`.

    `lr_scale` multiplies the recipe's learning rates (a round's `finetune_lr_scale`).

    Data-parallel: every rank calls this with its `rank` and a `wrap` that makes the model
    data-parallel (Ray Train's prepare_model); ranks draw different batches (the seed is offset
    by the rank) and only rank 0 writes checkpoints.
    """
    c0 = time.process_time()
    if threads:
        torch.set_num_threads(threads)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    root = Path(checkpoints_root)
    parent_id = read_manifest(parent)["id"]
    name = "stage3" if stage == "self_enhance" else stage
    n_steps = steps or (
        settings.b.finetune_steps if stage == "self_enhance" else settings.b.stage_steps[stage]
    )
    recipe = get_recipe(name, settings.preset, steps=n_steps, batch_size=settings.b.batch_size)
    if lr_scale != 1.0:
        recipe = recipe.model_copy(update={"lrs": {g: lr * lr_scale for g, lr in recipe.lrs.items()}})
    examples = resolve(sft_rows, samples_by_key or {}) if sft_rows else []
    pairs = resolve_preferences(sft_rows, samples_by_key or {}) if sft_rows else []
    if examples:  # the round's data weighs as much as the whole base mix
        recipe = recipe.model_copy(update={"mix": {**recipe.mix, "self": sum(recipe.mix.values())}})
    resume = root / "_resume" / job_key(stage, parent_id, settings, sft_key, n_steps, lr_scale)
    state = None
    if resume.exists():
        parts = Parts.from_checkpoint(load_checkpoint(resume))
        state = {
            "optimizer": load_optimizer_state(resume),
            "step": read_manifest(resume)["extra"]["train_step"],
        }
        log.info("resuming %s at step %d from %s", stage, state["step"], resume)
    else:
        parts = Parts.from_checkpoint(load_checkpoint(parent))

    def save_resume(st) -> None:
        if rank != 0:
            return
        tmp = resume.with_name(f"{resume.name}.tmp-{uuid.uuid4().hex[:6]}")
        save_stage(parts, tmp, stage, parent=parent_id, state=st)
        if resume.exists():
            shutil.rmtree(resume)
        os.rename(tmp, resume)
        parts.model.to(device)
        parts.semantic.to(device)

    st = fit_stage(
        parts,
        recipe,
        BaseCorpus(settings.cfg, settings.corpus),
        seed=settings.seed + 1_000_003 * rank,
        device=device,
        wrap=wrap,
        self_examples=examples,
        preference_pairs=pairs,
        state=state,
        progress=_reporter(progress, progress_file if rank == 0 else None, n_steps),
        checkpoint_every=max(1, n_steps // 4),
        on_checkpoint=save_resume,
    )
    resumed = int(state["step"]) if state else 0
    if rank != 0:
        return StageResult("", "", st.losses, resumed, time.process_time() - c0)
    path, ck_id = store(
        parts,
        root,
        stage,
        parent_id,
        {
            "round": round,
            "settings": settings.digest(),
            "steps": n_steps,
            "sft": sft_key,
            "self_examples": len(examples),
            "preference_pairs": len(pairs),
            "final_loss": st.losses[-1] if st.losses else None,
            **({"lr_scale": lr_scale} if lr_scale != 1.0 else {}),
        },
    )
    shutil.rmtree(resume, ignore_errors=True)
    return StageResult(path, ck_id, st.losses, int(state["step"]) if state else 0, time.process_time() - c0)
