"""What ShapesWorld gives the model: captions, VQA pairs, editing pairs, assessment examples, text.

These stand in for the paper's caption, VQA, editing and externally labelled assessment corpora.
Every record is derived from a scene's objects (never from a model), and every random choice goes
through a seeded random.Random, so a seed fixes the corpus.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Literal

from illume_core.self_enhance.assessment import (
    Assessment,
    assessment_question,
    correction_turn,
    format_assessment,
    from_evaluation,
)
from illume_core.world.geneval import Metadata
from illume_core.world.prompts import Holdout, Split, random_prompt, scene_for, violate
from illume_core.world.rules import Evaluation, apply_rules
from illume_core.world.scenes import (
    COLORS,
    NUMBERS,
    SHAPES,
    Obj,
    Scene,
    fits,
    place_more,
    relation,
    sample_scene,
)

EditKind = Literal["remove", "recolor", "add", "move"]
EDIT_KINDS: tuple[str, ...] = ("remove", "recolor", "add", "move")
MAX_OBJECTS = 4  # an edit never leaves a scene outside the contract's 1..4 objects
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


@dataclass(frozen=True)
class QA:
    """One visual question and its answer; `kind` is how_many, what_color, where or is_there."""

    question: str
    answer: str
    kind: str


@dataclass(frozen=True)
class EditPair:
    """An editing example: source image, instruction, target image (ILLUME's image-in, image-out task)."""

    source: Scene
    instruction: str
    target: Scene
    kind: str


@dataclass(frozen=True)
class AssessmentExample:
    """A prompt, a scene that agrees or disagrees with it, and the labels read off the scene."""

    meta: Metadata
    scene: Scene
    evaluation: Evaluation
    assessment: Assessment

    @property
    def question(self) -> str:
        return assessment_question(self.meta.prompt)

    @property
    def answer(self) -> str:
        return format_assessment(self.assessment)


def _a(words: str) -> str:
    return f"{'an' if words[:1] in 'aeiou' else 'a'} {words}"


def _number(n: int) -> str:
    return "zero" if n == 0 else NUMBERS.get(n, str(n))


def _group(n: int, color: str, shape: str) -> str:
    return _a(f"{color} {shape}") if n == 1 else f"{_number(n)} {color} {SHAPES[shape]}"


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def inventory(scene: Scene) -> str:
    """'a red circle and two blue squares': objects grouped by colour and shape, in drawing order."""
    counts: dict[tuple[str, str], int] = {}
    for o in scene.objects:
        counts[(o.color, o.shape)] = counts.get((o.color, o.shape), 0) + 1
    if not counts:
        return "nothing"
    return _and([_group(n, c, s) for (c, s), n in counts.items()])


def _where(rels: set[str]) -> str:
    """'left of', or 'above and left of' for a diagonal."""
    return " and ".join(sorted(rels))


def captions(scene: Scene) -> list[str]:
    """Several phrasings of the same scene; two-object scenes also get position-aware captions."""
    if not scene.objects:
        return ["an empty grey picture", "there is nothing on the grey background"]
    inv = inventory(scene)
    n = len(scene.objects)
    first_plural = not inv.startswith(("a ", "an "))
    out = [
        inv,
        f"a photo of {inv}",
        f"there {'are' if first_plural else 'is'} {inv}",
        f"{_a('image')} with {inv}",
        f"{_number(n)} {'object' if n == 1 else 'objects'}: {inv}",
    ]
    if n == 2:
        a, b = scene.objects
        rels = relation(a.box, b.box)
        if rels:
            na, nb = _a(f"{a.color} {a.shape}"), _a(f"{b.color} {b.shape}")
            out.append(f"{na} {_where(rels)} {nb}")
            out.append(f"{nb} {_where(relation(b.box, a.box))} {na}")
    return out


def caption(scene: Scene, rng: random.Random) -> str:
    """One caption of the scene, chosen at random."""
    return rng.choice(captions(scene))


def vqa_pairs(scene: Scene, rng: random.Random) -> list[QA]:
    """Questions whose answers are read off the scene: how many, what color, where, is there.

    'is there' questions come in yes/no pairs so that the answers are balanced; 'what color' and
    'where' ask only about shapes that occur once, so the question has one answer.
    """
    out: list[QA] = []
    present = list(dict.fromkeys(o.shape for o in scene.objects))
    absent = [s for s in SHAPES if s not in present]
    asked = present + ([rng.choice(absent)] if absent and rng.random() < 0.5 else [])
    for s in asked:
        out.append(QA(f"how many {SHAPES[s]}?", _number(scene.count(s)), "how_many"))
    unique = [o for o in scene.objects if scene.count(o.shape) == 1]
    for o in unique:
        out.append(QA(f"what color is the {o.shape}?", o.color, "what_color"))
    if len(unique) >= 2:
        a, b = rng.sample(unique, 2)
        rels = relation(a.box, b.box)
        if rels:
            out.append(QA(f"where is the {a.shape} relative to the {b.shape}?", _where(rels), "where"))
    if scene.objects:
        o = rng.choice(scene.objects)
        out.append(QA(f"is there {_a(f'{o.color} {o.shape}')}?", "yes", "is_there"))
        missing = [(c, s) for s in SHAPES for c in COLORS if scene.count(s, c) == 0]
        c, s = rng.choice(missing)
        out.append(QA(f"is there {_a(f'{c} {s}')}?", "no", "is_there"))
    rng.shuffle(out)
    return out


def _name(o: Obj, scene: Scene) -> str | None:
    """The shortest unique name of an object ('the circle' or 'the red circle'), None if ambiguous."""
    if scene.count(o.shape) == 1:
        return f"the {o.shape}"
    if scene.count(o.shape, o.color) == 1:
        return f"the {o.color} {o.shape}"
    return None


def _moved(o: Obj, scene: Scene, direction: str, rng: random.Random) -> Obj | None:
    """`o` moved clearly in `direction` (at least an eighth of the canvas) to a free spot, or None."""
    dx, dy = DIRECTIONS[direction]
    others = [p for p in scene.objects if p is not o]
    step = max(2, scene.size // 8)
    for _ in range(60):
        nx = o.x + dx * rng.randint(step, scene.size) if dx else o.x
        ny = o.y + dy * rng.randint(step, scene.size) if dy else o.y
        cand = replace(o, x=nx, y=ny)
        if fits(cand, others, scene.size):
            return cand
    return None


def _try_edit(scene: Scene, rng: random.Random, kind: str) -> EditPair | None:
    objs = list(scene.objects)
    named = [(i, o, _name(o, scene)) for i, o in enumerate(objs)]
    named = [(i, o, n) for i, o, n in named if n is not None]
    if kind == "remove" and len(objs) >= 2 and named:
        i, o, name = rng.choice(named)
        full = (
            f"the {o.color} {o.shape}" if rng.random() < 0.5 and scene.count(o.shape, o.color) == 1 else name
        )
        target = Scene(scene.size, tuple(objs[:i] + objs[i + 1 :]))
        return EditPair(scene, f"remove {full}", target, "remove")
    if kind == "recolor" and named:
        i, o, _ = rng.choice(named)
        if scene.count(o.shape, o.color) != 1:
            return None
        new = rng.choice([c for c in COLORS if c != o.color])
        target = Scene(scene.size, tuple(objs[:i] + [replace(o, color=new)] + objs[i + 1 :]))
        return EditPair(scene, f"make the {o.color} {o.shape} {new}", target, "recolor")
    if kind == "add" and len(objs) < MAX_OBJECTS:
        shape, color = rng.choice(list(SHAPES)), rng.choice(list(COLORS))
        try:
            target = place_more(rng, scene, [(shape, color)], max_tries=100)
        except RuntimeError:
            return None
        return EditPair(scene, f"add {_a(f'{color} {shape}')}", target, "add")
    if kind == "move" and named:
        i, o, name = rng.choice(named)
        direction = rng.choice(list(DIRECTIONS))
        moved = _moved(o, scene, direction, rng)
        if moved is None:
            return None
        target = Scene(scene.size, tuple(objs[:i] + [moved] + objs[i + 1 :]))
        where = f"to the {direction}" if direction in ("left", "right") else direction
        return EditPair(scene, f"move {name} {where}", target, "move")
    return None


def edit_pair(
    scene: Scene | None, rng: random.Random, size: int = 64, kind: EditKind | None = None
) -> EditPair:
    """An edit of `scene` (a random 1..4-object scene of `size` px if None) of `kind` (random if None).

    remove 'remove the blue square', recolor 'make the red circle green', add 'add a yellow cross',
    move 'move the circle to the left' / 'move the red circle up'. The target differs from the
    source exactly as instructed: other objects keep their place, and the target stays within the
    contract (1..4 objects, no overlap, inside the canvas). Objects are named so that the name is
    unique in the scene.
    """
    if kind is not None and kind not in EDIT_KINDS:
        raise ValueError(f"unknown edit kind {kind!r}; expected one of {list(EDIT_KINDS)}")
    given = scene is not None
    for _ in range(100):
        src = scene if given else sample_scene(rng, size, 1, 3)
        kinds = [kind] if kind else rng.sample(list(EDIT_KINDS), len(EDIT_KINDS))
        for k in kinds:
            pair = _try_edit(src, rng, k)
            if pair is not None:
                return pair
    raise RuntimeError(f"no {kind or 'edit'} applies to this scene; pass scene=None or another kind")


def assessment_example(
    rng: random.Random,
    size: int = 64,
    tag: str | None = None,
    p_correct: float = 0.5,
    holdout: Holdout | None = None,
    split: Split = "all",
) -> AssessmentExample:
    """A prompt and a scene that fits it (probability p_correct) or breaks one of its clauses.

    The labels are read off the scene with rules.apply_rules, so they are exact either way.
    """
    meta = random_prompt(rng, tag, holdout, split)
    scene = scene_for(meta, rng, size) if rng.random() < p_correct else violate(meta, rng, size)
    ev = apply_rules(meta, scene.objects)
    return AssessmentExample(meta, scene, ev, from_evaluation(meta, scene.objects, ev))


def text_corpus(seed: int, n: int, size: int = 64) -> Iterator[str]:
    """`n` strings covering all text the model will see, for training the text tokenizer.

    Prompts, captions, VQA questions and answers, assessment questions and answers, edit
    instructions and correction turns, in a seeded order.
    """
    rng = random.Random(f"text_corpus:{seed}")
    made = 0
    while made < n:
        scene = sample_scene(rng, size)
        ex = assessment_example(rng, size)
        texts = [caption(scene, rng), ex.meta.prompt, ex.question, ex.answer]
        for qa in vqa_pairs(scene, rng)[:3]:
            texts += [qa.question, qa.answer]
        texts.append(edit_pair(scene, rng, size).instruction)
        if not ex.evaluation.correct:
            texts.append(correction_turn(ex.meta))
        yield from texts[: n - made]
        made += min(len(texts), n - made)
