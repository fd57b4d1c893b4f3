"""Choosing a base model's sampling setting on tuning images, never on ShapesEval's images.

How a model's drawings should be sampled depends on the model. A top-p cut of 0.7 keeps a strong
model from drawing objects nobody asked for (run 8's bases: 0.710 / 0.692 against 0.598 / 0.554
without it), but on a weak one, whose cells give the background more than 0.7 of their mass, it
keeps only background and single objects come out empty (the demo's base: 0.142 with the cut,
0.333 without it). So after a base model's training the pipeline draws a small set of tuning
prompts under each candidate setting (`illume_core.model.sampling.SAMPLING_CANDIDATES`), has the
judge score them, and keeps the best; every later drawing in that lake (ShapesEval, the rounds'
samples) uses it. The tuning prompts are drawn from a seed of their own, and their images from
seeds of their own (`TUNING_ROUND` in the seed's hash), so no tuning image is a ShapesEval image.
ShapesWorld's prompt space is small (5 single-object prompts, 15 counting ones), so many tuning
prompts are ShapesEval prompts too: the choice sees other drawings of the same prompts, never the
drawings ShapesEval scores.
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
# the "round" in a tuning image's seed hash (`engine.sample_seed`): ShapesEval's images of the same
# prompt are drawn at the checkpoint's round (0 for a base model), never at this one
TUNING_ROUND = 424_242


def tuning_set(per_tag: int, images_per_prompt: int) -> tuple[list[dict], dict[str, Metadata]]:
    """The tuning prompts' sampling requests (`per_tag` prompts of each GenEval tag, with seeds of
    their own: every setting draws from the same seeds, so settings differ only in how they
    sample) and their metadata by prompt id."""
    prompts = generate_prompts(seed=TUNING_SEED, per_tag=per_tag)
    return sample_items(prompts, images_per_prompt, TUNING_ROUND), {prompt_id(m): m for m in prompts}


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
