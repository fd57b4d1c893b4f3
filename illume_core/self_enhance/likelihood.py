"""Self-assessment by the generation path: is the drawing more likely under its prompt than under a
prompt that changes one dimension?

The model's understanding path learns to read an image slowly (docs/BASE_MODEL.md section 9),
while its generation path is what the base training spends its compute on. So the model can also
judge its own drawing by teacher forcing: the log-likelihood of the drawing's image codes under
its prompt, against the same codes under *counterfactual* prompts that change one dimension:

- object: another shape in a clause's place, or (two objects) one of the two left out;
- count: another number of the counted shape (one to four; counting prompts only, since a
  drawing with more objects than asked is no fault elsewhere, as in GenEval);
- color: another colour of a coloured clause, or (two coloured objects) the colours swapped;
- spatial: the opposite relation, or subject and target swapped.

A dimension is judged "no" when some counterfactual of that dimension explains the codes better
than the prompt by more than the dimension's margin (`LikelihoodMargins`, log-likelihood in nats,
set on prompts of their own: `benchmarks/likelihood_assessment.py`). Dimensions a prompt does not
ask about (no colour, no relation) are "yes". The classifier is the model itself (one forward
pass per prompt, no sampling); its guidance is irrelevant here, since guidance scales the
difference of two conditionals and keeps its sign.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from illume_core.self_enhance.assessment import Assessment, DimensionAssessment
from illume_core.self_enhance.options import LikelihoodMargins
from illume_core.world import prompts as P
from illume_core.world.geneval import Metadata
from illume_core.world.rules import DIMENSIONS
from illume_core.world.scenes import COLORS, RELATIONS, SHAPES

OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
assert set(OPPOSITE) == set(RELATIONS)


def _others(values: Sequence[str], *taken: str) -> list[str]:
    return [v for v in values if v not in taken]


def counterfactuals(meta: Metadata) -> dict[str, list[Metadata]]:
    """Prompts that differ from `meta` in one dimension each, by dimension (empty where a tag does
    not ask about that dimension). Built with the tag's own constructor, so the text is the
    corpus's phrasing."""
    out: dict[str, list[Metadata]] = {d: [] for d in DIMENSIONS}
    inc, tag = meta.include, meta.tag
    shapes = list(SHAPES)
    if tag == "single_object":
        s = inc[0].cls
        out["object"] = [P.single_object(o) for o in _others(shapes, s)]  # more of it is no fault
    elif tag == "two_object":
        a, b = inc[0].cls, inc[1].cls
        out["object"] = [P.single_object(a), P.single_object(b)]
        out["object"] += [P.two_object(o, b) for o in _others(shapes, a, b)]
        out["object"] += [P.two_object(a, o) for o in _others(shapes, a, b)]
    elif tag == "counting":
        s, n = inc[0].cls, inc[0].count
        # the rules file a missing shape under count on counting prompts
        out["count"] = [P.single_object(s)] + [P.counting(s, m) for m in P.COUNTS if m != n]
        out["count"] += [P.counting(o, n) for o in _others(shapes, s)]
    elif tag == "colors":
        s, c = inc[0].cls, inc[0].color
        out["color"] = [P.colors(o, s) for o in _others(COLORS, c)]
        out["object"] = [P.colors(c, o) for o in _others(shapes, s)]
    elif tag == "color_attr":
        (ca, a), (cb, b) = (inc[0].color, inc[0].cls), (inc[1].color, inc[1].cls)
        out["color"] = [P.color_attr((cb, a), (ca, b))] if ca != cb else []
        out["color"] += [P.color_attr((o, a), (cb, b)) for o in _others(COLORS, ca)]
        out["color"] += [P.color_attr((ca, a), (o, b)) for o in _others(COLORS, cb)]
        out["object"] = [P.colors(ca, a), P.colors(cb, b)]
        out["object"] += [P.color_attr((ca, o), (cb, b)) for o in _others(shapes, a, b)]
        out["object"] += [P.color_attr((ca, a), (cb, o)) for o in _others(shapes, a, b)]
    elif tag == "position":
        (tc, ts), (sc, ss) = (inc[0].color, inc[0].cls), (inc[1].color, inc[1].cls)
        rel = inc[1].position[0]
        # the opposite relation, in both phrasings (a diagonal layout satisfies "left of" and
        # "below" at once, so the perpendicular relations are no counterfactual)
        out["spatial"] = [P.position((sc, ss), OPPOSITE[rel], (tc, ts)), P.position((tc, ts), rel, (sc, ss))]
        out["color"] = [P.position((o, ss), rel, (tc, ts)) for o in _others(COLORS, sc)]
        out["color"] += [P.position((sc, ss), rel, (o, ts)) for o in _others(COLORS, tc)]
        out["object"] = [P.colors(sc, ss), P.colors(tc, ts)]
        out["object"] += [P.position((sc, o), rel, (tc, ts)) for o in _others(shapes, ss, ts)]
        out["object"] += [P.position((sc, ss), rel, (tc, o)) for o in _others(shapes, ss, ts)]
    else:
        raise ValueError(f"no counterfactuals for tag {tag!r}")
    return out


@torch.no_grad()
def code_loglik(
    model, processor, prompts: Sequence[str], codes: torch.Tensor, batch_size: int = 64
) -> torch.Tensor:
    """log p(codes[i] | prompts[i]) by teacher forcing: (B,), summed over the drawing's labelled
    tokens (its image codes, then end-of-image and end-of-sequence, which every prompt shares)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(prompts), batch_size):
        chunk = [
            processor.text_to_image(p, c)
            for p, c in zip(prompts[i : i + batch_size], codes[i : i + batch_size], strict=True)
        ]
        batch = processor.collate(chunk).to(device)
        out.append(model.label_logprobs(batch).sum(-1).float().cpu())  # (b,)
    return torch.cat(out) if out else torch.zeros(0)


def _reason(best: Metadata | None, gap: float) -> str:
    if best is None:
        return ""
    return f'more likely as "{best.prompt}" (+{gap:.1f} nats)'


@torch.no_grad()
def assess_by_likelihood(
    model,
    processor,
    metas: Sequence[Metadata],
    codes: torch.Tensor,
    margins: LikelihoodMargins = LikelihoodMargins(),
    batch_size: int = 64,
) -> list[tuple[Assessment, dict[str, float]]]:
    """Assess drawings (codes (B, N), one per metadata line) by likelihood: for each, the
    assessment and, per dimension, the best counterfactual's log-likelihood gain over the prompt
    (-inf where the prompt has no counterfactual of that dimension)."""
    if len(metas) != codes.shape[0]:
        raise ValueError(f"{len(metas)} prompts for {codes.shape[0]} drawings")
    texts: list[str] = []
    owner: list[tuple[int, str | None, Metadata]] = []  # (image, dimension or None for the prompt, meta)
    for i, m in enumerate(metas):
        texts.append(m.prompt)
        owner.append((i, None, m))
        for d, cfs in counterfactuals(m).items():
            for cf in cfs:
                texts.append(cf.prompt)
                owner.append((i, d, cf))
    idx = torch.tensor([i for i, _, _ in owner])
    ll = code_loglik(model, processor, texts, codes[idx].cpu(), batch_size)  # (total,)
    base = {i: float(ll[k]) for k, (i, d, _) in enumerate(owner) if d is None}
    best: dict[tuple[int, str], tuple[float, Metadata]] = {}
    for k, (i, d, cf) in enumerate(owner):
        if d is None:
            continue
        gain = float(ll[k]) - base[i]
        if (i, d) not in best or gain > best[(i, d)][0]:
            best[(i, d)] = (gain, cf)
    out = []
    for i in range(len(metas)):
        dims, gains = {}, {}
        for d in DIMENSIONS:
            gain, cf = best.get((i, d), (float("-inf"), None))
            no = gain > getattr(margins, d)
            gains[d] = gain
            dims[d] = DimensionAssessment(
                verdict="no" if no else "yes", reason=_reason(cf, gain) if no else ""
            )
        out.append((Assessment(**dims), gains))
    return out


def rank_key(gains: dict[str, float], margins: LikelihoodMargins = LikelihoodMargins()) -> tuple[int, float]:
    """How well a drawing passes its own assessment, as a sort key (higher is better): its number
    of "yes" dimensions, then how far its worst dimension stays inside its margin."""
    over = [gains[d] - getattr(margins, d) for d in DIMENSIONS]
    return sum(o <= 0 for o in over), -max(over)


@torch.no_grad()
def pick_best(
    model, processor, meta: Metadata, codes: torch.Tensor, margins: LikelihoodMargins = LikelihoodMargins()
) -> int:
    """Index of the drawing (codes (N, T), all of `meta`'s prompt) the model judges best."""
    judged = assess_by_likelihood(model, processor, [meta] * codes.shape[0], codes, margins)
    keys = [rank_key(g, margins) for _, g in judged]
    return max(range(len(keys)), key=lambda i: (keys[i], -i))


@functools.cache
def _prompt_index() -> dict[str, Metadata]:
    return {m.prompt: m for tag in P.TAGS for m in P.all_prompts(tag)}


def metadata_for(prompt: str) -> Metadata:
    """The metadata line of a prompt in the world's phrasing ('a photo of two red circles' is
    not one: counting prompts name no colour); a clear error for any other text."""
    meta = _prompt_index().get(" ".join(prompt.split()))
    if meta is None:
        raise ValueError(
            f"{prompt!r} is not a ShapesWorld prompt, so the model has no counterfactuals to judge it "
            "against; use one of the six tags' phrasings, e.g. 'a photo of a red circle', "
            "'a photo of three squares', 'a photo of a blue diamond left of a yellow cross' "
            "(`illume prompts --out DIR` writes a sample of them)"
        )
    return meta.model_copy(deep=True)


__all__ = [
    "OPPOSITE",
    "LikelihoodMargins",
    "assess_by_likelihood",
    "code_loglik",
    "counterfactuals",
    "metadata_for",
    "pick_best",
    "rank_key",
]
