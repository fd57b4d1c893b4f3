"""Choosing a base model's sampling setting on tuning prompts, never on ShapesEval's.

How a model's drawings should be sampled depends on the model. A top-p cut of 0.7 keeps a strong
model from drawing objects nobody asked for (run 8's bases: 0.710 / 0.692 against 0.598 / 0.554
without it), but on a weak one, whose cells give the background more than 0.7 of their mass, it
keeps only background and single objects come out empty (the demo's base: 0.142 with the cut,
0.333 without it). So after a base model's training the pipeline draws a small set of tuning
prompts under each candidate setting (`illume_core.model.sampling.SAMPLING_CANDIDATES`), has the
judge score them, and keeps the best; every later drawing in that lake (ShapesEval, the rounds'
samples, editing) uses it. The tuning prompts come from a seed of their own, apart from
ShapesEval's, VQA's, editing's and the training corpus's, so ShapesEval stays a held-out figure
after the choice.
"""

from __future__ import annotations

from collections.abc import Sequence

from illume_core.eval.evaluations import judge_rows, prompt_id, sample_items, tag_scores
from illume_core.model.sampling import SamplingParams
from illume_core.world.geneval import Metadata
from illume_core.world.prompts import generate_prompts

# tuning prompts of their own: not ShapesEval's (7_000_001), not VQA's or editing's, not the
# assessment benchmark's; benchmarks/sampling_sweep.py draws from the same seed
TUNING_SEED = 424_242


def tuning_set(per_tag: int, images_per_prompt: int) -> tuple[list[dict], dict[str, Metadata]]:
    """The tuning prompts' sampling requests (`per_tag` prompts of each GenEval tag, seeded as a
    round-0 drawing: every setting draws from the same seeds, so settings differ only in how they
    sample) and their metadata by prompt id."""
    prompts = generate_prompts(seed=TUNING_SEED, per_tag=per_tag)
    return sample_items(prompts, images_per_prompt, 0), {prompt_id(m): m for m in prompts}


def setting_scores(samples: Sequence[dict], prompts: dict[str, Metadata]) -> dict[str, tuple[float, int]]:
    """The judge's accuracy of one setting's drawings: {tag: (accuracy, n)} plus 'overall' (the
    unweighted mean of the tags, as ShapesEval's)."""
    return tag_scores(judge_rows(samples, prompts))


def choose(scores: Sequence[tuple[SamplingParams, float]]) -> SamplingParams:
    """The setting with the highest overall; a tie goes to the earlier one (the candidates list
    the pipeline's default first, so an even contest keeps it)."""
    if not scores:
        raise ValueError("no sampling settings were scored")
    best = scores[0]
    for params, overall in scores[1:]:
        if overall > best[1]:
            best = (params, overall)
    return best[0]
