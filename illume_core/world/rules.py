"""GenEval's scoring rules applied to a list of found objects, with ILLUME's four dimensions.

One function, `apply_rules`, serves both the judge (objects detected in an image) and the scene
labels of ShapesWorld training data (the objects that were drawn), so the two can never
disagree on what "correct" means. Each failing clause gives a GenEval-style reason and marks
one of the assessment dimensions (object, count, color, spatial) as failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from illume_core.world.geneval import Metadata
from illume_core.world.scenes import COLORS, NUMBERS, SHAPES, relation

DIMENSIONS = ("object", "count", "color", "spatial")


class Found(Protocol):
    """Anything with a shape, a colour and a box (x0, y0, x1, y1): a drawn or a detected object."""

    shape: str
    color: str

    @property
    def box(self) -> tuple[float, float, float, float]: ...


@dataclass
class Evaluation:
    """GenEval's verdict on one image, plus which of the four dimensions failed."""

    correct: bool
    reasons: list[str] = field(default_factory=list)
    dimensions: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(DIMENSIONS, True))

    @property
    def reason(self) -> str:
        return "\n".join(self.reasons)

    def fail(self, dimension: str, reason: str) -> None:
        self.correct = False
        self.dimensions[dimension] = False
        self.reasons.append(reason)


def apply_rules(meta: Metadata, objects: Sequence[Found]) -> Evaluation:
    """Score a metadata line against objects with GenEval's rules.

    - include: at least `count` objects of the class (GenEval keeps the first `count`); with a
      colour, at least `count` of them in that colour (objects of the asked colour are taken
      first, since a deterministic detector has no confidence order); with a position, every
      kept object must stand in that relation to every object kept for the target clause.
    - exclude: fewer than `count` objects of the class (so counting is exact: include N,
      exclude N + 1).
    Missing objects fail `object` (or `count` when more than one was asked); a wrong colour
    fails `color`; a wrong relation fails `spatial`; an exclude clause fails `count`.
    """
    ev = Evaluation(correct=True)
    by_class: dict[str, list[Found]] = {}
    for o in objects:
        by_class.setdefault(o.shape, []).append(o)

    kept_groups: list[list[Found] | None] = []
    for req in meta.include:
        found = list(by_class.get(req.cls, []))
        if req.color is not None:
            found.sort(key=lambda o: o.color != req.color)  # stable: asked colour first
        kept = found[: req.count]
        matched = True
        if len(kept) < req.count:
            matched = False
            ev.fail(
                "count" if req.count > 1 or meta.tag == "counting" else "object",
                f"expected {req.cls}>={req.count}, found {len(kept)}",
            )
        else:
            if req.color is not None:
                colors = [o.color for o in kept]
                n_ok = colors.count(req.color)
                if n_ok < req.count:
                    matched = False
                    others = ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors)
                    ev.fail(
                        "color",
                        f"expected {req.color} {req.cls}>={req.count}, found {n_ok} {req.color}; and {others}",
                    )
            if req.position is not None and matched:
                rel, target = req.position
                targets = kept_groups[target] if 0 <= target < len(kept_groups) else None
                if targets is None:
                    matched = False
                    ev.fail("spatial", f"no target for {req.cls} to be {rel}")
                else:
                    for o in kept:
                        bad = [relation(o.box, t.box) for t in targets if rel not in relation(o.box, t.box)]
                        if bad:
                            matched = False
                            found_rel = " and ".join(sorted(bad[0])) or "no clear relation to the"
                            ev.fail("spatial", f"expected {req.cls} {rel} target, found {found_rel} target")
                            break
        kept_groups.append(kept if matched else None)

    for req in meta.exclude:
        n = len(by_class.get(req.cls, []))
        if n >= req.count:
            ev.fail("count", f"expected {req.cls}<{req.count}, found {n}")
    return ev


def describe_counts(objects: Sequence[Found]) -> str:
    """A short plain-words inventory, e.g. 'two red circles and one blue square'."""
    counts: dict[tuple[str, str], int] = {}
    for o in objects:
        counts[(o.color, o.shape)] = counts.get((o.color, o.shape), 0) + 1
    parts = [f"{NUMBERS.get(n, str(n))} {c} {s if n == 1 else SHAPES[s]}" for (c, s), n in counts.items()]
    if not parts:
        return "nothing"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
