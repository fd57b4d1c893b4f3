"""ShapesWorld prompts in GenEval's grammar and metadata format, and scenes that fit (or break) them.

`generate_prompts` samples the six GenEval tags with shapes as classes, optionally keeping a set of
held-out compositions out of training (`Holdout`). `scene_for` draws a scene that is correct by
construction; `violate` draws one that breaks exactly one clause. Both are checked by the same
GenEval rules the judge uses (`rules.apply_rules`), so labels never disagree with the scorer.
"""

from __future__ import annotations

import functools
import itertools
import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from illume_core.world.geneval import TAGS, Clause, Metadata
from illume_core.world.rules import apply_rules
from illume_core.world.scenes import (
    COLORS,
    NUMBERS,
    RELATIONS,
    SHAPES,
    Scene,
    first_cell,
    place,
    place_more,
    relation,
)

Split = Literal["train", "heldout", "all"]
ViolationKind = Literal["count", "color", "shape", "relation"]
VIOLATION_KINDS: tuple[str, ...] = ("count", "color", "shape", "relation")
# the assessment dimension each violation kind fails
KIND_DIMENSION = {"count": "count", "color": "color", "shape": "object", "relation": "spatial"}
COUNTS = (2, 3, 4)  # GenEval counts two to four


def article(word: str) -> str:
    """'an' before a vowel-initial word ('an orange circle'), else 'a'."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def _np(shape: str, color: str | None = None) -> str:
    """'a red circle' / 'an orange cross' / 'a square'."""
    words = f"{color} {shape}" if color else shape
    return f"{article(words)} {words}"


# ---------------------------------------------------------------- one metadata line per tag


def single_object(shape: str) -> Metadata:
    return Metadata(tag="single_object", include=[Clause(cls=shape)], prompt=f"a photo of {_np(shape)}")


def two_object(a: str, b: str) -> Metadata:
    return Metadata(
        tag="two_object",
        include=[Clause(cls=a), Clause(cls=b)],
        prompt=f"a photo of {_np(a)} and {_np(b)}",
    )


def counting(shape: str, n: int) -> Metadata:
    return Metadata(
        tag="counting",
        include=[Clause(cls=shape, count=n)],
        exclude=[Clause(cls=shape, count=n + 1)],
        prompt=f"a photo of {NUMBERS[n]} {SHAPES[shape]}",
    )


def colors(color: str, shape: str) -> Metadata:
    return Metadata(
        tag="colors", include=[Clause(cls=shape, color=color)], prompt=f"a photo of {_np(shape, color)}"
    )


def position(subject: tuple[str, str], rel: str, target: tuple[str, str]) -> Metadata:
    """'a photo of a blue diamond left of a yellow cross': subject = (colour, shape), target likewise.

    As in GenEval, the target is include[0] and the subject include[1] with position [rel, 0].
    """
    (sc, ss), (tc, ts) = subject, target
    return Metadata(
        tag="position",
        include=[Clause(cls=ts, color=tc), Clause(cls=ss, color=sc, position=(rel, 0))],
        prompt=f"a photo of {_np(ss, sc)} {rel} {_np(ts, tc)}",
    )


def color_attr(a: tuple[str, str], b: tuple[str, str]) -> Metadata:
    """'a photo of a red circle and a blue square' from (colour, shape) pairs."""
    return Metadata(
        tag="color_attr",
        include=[Clause(cls=a[1], color=a[0]), Clause(cls=b[1], color=b[0])],
        prompt=f"a photo of {_np(a[1], a[0])} and {_np(b[1], b[0])}",
    )


def all_prompts(tag: str) -> list[Metadata]:
    """Every prompt of a tag, in a fixed order (two objects in one prompt are different shapes)."""
    return [m.model_copy(deep=True) for m in _space(tag)]


@functools.cache
def _space(tag: str) -> tuple[Metadata, ...]:
    """The tag's prompt space, built once (position alone has 8000 lines); callers get copies."""
    return tuple(_enumerate(tag))


def _enumerate(tag: str) -> list[Metadata]:
    shapes, cols = list(SHAPES), list(COLORS)
    pairs = list(itertools.permutations(shapes, 2))
    if tag == "single_object":
        return [single_object(s) for s in shapes]
    if tag == "two_object":
        return [two_object(a, b) for a, b in pairs]
    if tag == "counting":
        return [counting(s, n) for s in shapes for n in COUNTS]
    if tag == "colors":
        return [colors(c, s) for s in shapes for c in cols]
    if tag == "position":
        return [
            position((ca, a), rel, (cb, b))
            for a, b in pairs
            for rel in RELATIONS
            for ca in cols
            for cb in cols
        ]
    if tag == "color_attr":
        return [color_attr((ca, a), (cb, b)) for a, b in pairs for ca in cols for cb in cols]
    raise ValueError(f"unknown tag {tag!r}; expected one of {list(TAGS)}")


# ---------------------------------------------------------------- held-out compositions


def _check_shape(s: str) -> str:
    if s not in SHAPES:
        raise ValueError(f"unknown shape {s!r}; expected one of {list(SHAPES)}")
    return s


def _check_color(c: str) -> str:
    if c not in COLORS:
        raise ValueError(f"unknown colour {c!r}; expected one of {list(COLORS)}")
    return c


def _check_relation(r: str) -> str:
    if r not in RELATIONS:
        raise ValueError(f"unknown relation {r!r}; expected one of {list(RELATIONS)}")
    return r


class Holdout(BaseModel):
    """Compositions kept out of training, to test generalisation to unseen combinations.

    A prompt is held out if it contains any of them: a colour-shape pair ("red circle"), an
    unordered pair of shapes in one prompt ("circle+square"), a relation name ("left of"), or a
    relation triple (subject shape, relation, target shape).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    color_shapes: frozenset[tuple[str, str]] = Field(default_factory=frozenset)  # (colour, shape)
    shape_pairs: frozenset[tuple[str, str]] = Field(default_factory=frozenset)  # sorted (shape, shape)
    relations: frozenset[str] = Field(default_factory=frozenset)
    relation_triples: frozenset[tuple[str, str, str]] = Field(default_factory=frozenset)

    @field_validator("color_shapes")
    @classmethod
    def _cs(cls, v: frozenset[tuple[str, str]]) -> frozenset[tuple[str, str]]:
        return frozenset((_check_color(c), _check_shape(s)) for c, s in v)

    @field_validator("shape_pairs")
    @classmethod
    def _sp(cls, v: frozenset[tuple[str, str]]) -> frozenset[tuple[str, str]]:
        out = set()
        for a, b in v:
            if _check_shape(a) == _check_shape(b):
                raise ValueError(f"a shape pair needs two different shapes, got {a!r} twice")
            out.add(tuple(sorted((a, b))))
        return frozenset(out)

    @field_validator("relations")
    @classmethod
    def _rel(cls, v: frozenset[str]) -> frozenset[str]:
        return frozenset(_check_relation(r) for r in v)

    @field_validator("relation_triples")
    @classmethod
    def _tri(cls, v: frozenset[tuple[str, str, str]]) -> frozenset[tuple[str, str, str]]:
        return frozenset((_check_shape(a), _check_relation(r), _check_shape(b)) for a, r, b in v)

    @classmethod
    def parse(cls, specs: list[str]) -> Holdout:
        """Build from CLI strings: `color_shape:red/circle`, `shape_pair:circle/square`,
        `relation:left of`, `relation:diamond/left of/cross` (subject/relation/target)."""
        cs, sp, rel, tri = set(), set(), set(), set()
        usage = (
            "use color_shape:COLOUR/SHAPE, shape_pair:SHAPE/SHAPE, relation:RELATION "
            "or relation:SHAPE/RELATION/SHAPE (e.g. color_shape:red/circle)"
        )
        for spec in specs:
            kind, sep, value = spec.partition(":")
            parts = [p.strip() for p in value.split("/")]
            kind = kind.strip()
            try:
                if not sep or not value.strip():
                    raise ValueError("missing ':' or value")
                if kind == "color_shape" and len(parts) == 2:
                    cs.add((_check_color(parts[0]), _check_shape(parts[1])))
                elif kind == "shape_pair" and len(parts) == 2:
                    sp.add((parts[0], parts[1]))
                elif kind == "relation" and len(parts) == 1:
                    rel.add(_check_relation(parts[0]))
                elif kind == "relation" and len(parts) == 3:
                    tri.add((parts[0], parts[1], parts[2]))
                else:
                    raise ValueError("unknown kind or wrong number of parts")
            except ValueError as e:
                raise ValueError(f"bad holdout {spec!r}: {e}; {usage}") from None
        try:
            return cls(color_shapes=cs, shape_pairs=sp, relations=rel, relation_triples=tri)
        except ValueError as e:
            raise ValueError(f"bad holdout {specs!r}: {e}; {usage}") from None

    @classmethod
    def default(cls) -> Holdout:
        """The fixed holdout the experiments use: four colour-shape pairs, two shape pairs."""
        return cls(
            color_shapes=frozenset(
                {("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "diamond")}
            ),
            shape_pairs=frozenset({("circle", "triangle"), ("cross", "square")}),
        )

    def specs(self) -> list[str]:
        """The CLI strings that `parse` turns back into this holdout."""
        out = [f"color_shape:{c}/{s}" for c, s in sorted(self.color_shapes)]
        out += [f"shape_pair:{a}/{b}" for a, b in sorted(self.shape_pairs)]
        out += [f"relation:{r}" for r in sorted(self.relations)]
        out += [f"relation:{a}/{r}/{b}" for a, r, b in sorted(self.relation_triples)]
        return out

    def is_heldout(self, meta: Metadata) -> bool:
        """True if the prompt contains any held-out composition."""
        for c in meta.include:
            if c.color is not None and (c.color, c.cls) in self.color_shapes:
                return True
        classes = sorted({c.cls for c in meta.include})
        for a, b in itertools.combinations(classes, 2):
            if (a, b) in self.shape_pairs:
                return True
        for c in meta.include:
            if c.position is not None:
                rel, j = c.position
                if rel in self.relations:
                    return True
                if 0 <= j < len(meta.include) and (c.cls, rel, meta.include[j].cls) in self.relation_triples:
                    return True
        return False


def generate_prompts(
    seed: int, per_tag: int, holdout: Holdout | None = None, split: Split = "all"
) -> list[Metadata]:
    """`per_tag` prompts for each of the six tags, deterministic per seed.

    Prompts are drawn without repetition from the tag's whole space (after the split's filter);
    only when `per_tag` exceeds that space are prompts repeated, in a new shuffled pass. With
    split="heldout", tags where no held-out composition can occur give no prompts.
    """
    if per_tag < 0:
        raise ValueError(f"per_tag must be >= 0, got {per_tag}")
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be one of train, heldout, all; got {split!r}")
    holdout = holdout or Holdout()
    out: list[Metadata] = []
    for tag in TAGS:
        space = split_space(tag, holdout, split)
        if not space:
            continue
        rng = random.Random(f"prompts:{seed}:{tag}")
        chosen: list[Metadata] = []
        while len(chosen) < per_tag:
            batch = list(space)
            rng.shuffle(batch)
            chosen.extend(batch[: per_tag - len(chosen)])
        out.extend(m.model_copy(deep=True) for m in chosen)
    return out


@functools.cache
def split_space(tag: str, holdout: Holdout, split: Split) -> tuple[Metadata, ...]:
    """Every prompt of `tag` in the split: the held-out compositions, the rest, or all."""
    space = _space(tag)
    if split == "all":
        return space
    want = split == "heldout"
    return tuple(m for m in space if holdout.is_heldout(m) == want)


def random_prompt(
    rng: random.Random, tag: str | None = None, holdout: Holdout | None = None, split: Split = "all"
) -> Metadata:
    """One prompt drawn uniformly from a tag's space (a random tag if None), after the split's filter."""
    tags = [tag] if tag is not None else list(TAGS)
    if tag is not None and tag not in TAGS:
        raise ValueError(f"unknown tag {tag!r}; expected one of {list(TAGS)}")
    rng.shuffle(tags)
    for t in tags:
        space = split_space(t, holdout or Holdout(), split)
        if space:
            return rng.choice(space).model_copy(deep=True)
    raise ValueError(f"no {split} prompt exists for tag {tag!r} under this holdout; choose another split")


# ---------------------------------------------------------------- scenes for a metadata line


def _check_vocabulary(meta: Metadata) -> None:
    bad = meta.out_of_vocabulary()
    if bad:
        raise ValueError(f"{meta.prompt!r} names {', '.join(bad)}, which ShapesWorld cannot draw")


def _layout(meta: Metadata, rng: random.Random) -> tuple[list[tuple[str, str]], str | None]:
    """Object specs (shape, colour) that satisfy the include clauses, and the relation to place them in.

    Free colours are random. For position the target comes first, since `place` puts every later
    object in `relation_to_first` to the first one.
    """
    specs: list[tuple[str, str]] = []
    rel = None
    for c in meta.include:
        for _ in range(c.count):
            specs.append((c.cls, c.color or rng.choice(list(COLORS))))
        if c.position is not None:
            rel = c.position[0]
    return specs, rel


def _add_distractors(meta: Metadata, rng: random.Random, scene: Scene, n_max: int) -> Scene:
    """Sometimes add up to `n_max` objects of classes the prompt never names (cannot change the verdict)."""
    named = {c.cls for c in [*meta.include, *meta.exclude]}
    free = [s for s in SHAPES if s not in named]
    if not free or n_max <= 0 or rng.random() < 0.5:
        return scene
    n = rng.randint(1, n_max)
    specs = [(rng.choice(free), rng.choice(list(COLORS))) for _ in range(n)]
    try:
        return place_more(rng, scene, specs)
    except RuntimeError:
        return scene  # a crowded canvas keeps its scene without distractors


def _distractor_room(n_objects: int) -> int:
    return max(0, min(2, 5 - n_objects))


def _draw(
    meta: Metadata,
    rng: random.Random,
    size: int,
    specs: list[tuple[str, str]],
    rel: str | None,
    distractors: bool,
) -> Scene:
    scene = place(rng, size, specs, relation_to_first=rel)
    if distractors:
        scene = _add_distractors(meta, rng, scene, _distractor_room(len(specs)))
    return scene


def named_order(meta: Metadata) -> tuple[int, int] | None:
    """For a prompt that names two different objects, the indices (into `include`, which is also
    the order `scene_for` places them in) of the object a row-by-row drawer should start first and
    the one it should start second; None for the other tags.

    The order is the prompt's: "a red circle and a blue square" starts the circle first. A position
    prompt names its subject first ("a blue diamond left of a yellow cross": the diamond), except
    "below", whose subject lies under its target, so the target comes first.
    """
    if meta.tag in ("two_object", "color_attr"):
        return (0, 1)
    if meta.tag == "position":  # include[0] is the target, include[1] the subject
        return (0, 1) if meta.include[1].position[0] == "below" else (1, 0)
    return None


def in_reading_order(meta: Metadata, scene: Scene, cell: int) -> bool:
    """True when the objects a two-object prompt names start, on a grid of `cell`-px cells read row
    by row, in `named_order` (the other tags always pass). Distractors are not constrained."""
    order = named_order(meta)
    if order is None:
        return True
    first, second = (first_cell(scene.objects[i], scene.size, cell) for i in order)
    return first < second


def scene_for(
    meta: Metadata,
    rng: random.Random,
    size: int = 64,
    distractors: bool = True,
    order_cell: int | None = None,
) -> Scene:
    """A scene that is correct for the metadata line by construction (checked with rules.apply_rules).

    Counting gets exactly N objects of its class; colours the prompt leaves free are random;
    distractors, added only sometimes, are of classes the prompt does not name. With `order_cell`,
    a prompt that names two objects gets a scene where they start, on that grid read row by row,
    in the order the prompt names them (`in_reading_order`); if no such layout turns up, a correct
    scene in the other order is returned.
    """
    _check_vocabulary(meta)
    fallback = None
    for _ in range(100):
        specs, rel = _layout(meta, rng)
        scene = _draw(meta, rng, size, specs, rel, distractors)
        if apply_rules(meta, scene.objects).correct:
            if order_cell is None or in_reading_order(meta, scene, order_cell):
                return scene
            if fallback is None:
                fallback = scene
    if fallback is not None:
        return fallback
    raise RuntimeError(
        f"no correct scene found for {meta.prompt!r} on a {size}px canvas; use a larger canvas"
    )


def kinds_for(meta: Metadata) -> list[str]:
    """The violation kinds that apply to a line's tag (each fails exactly one assessment dimension)."""
    kinds = []
    if any(c.count > 1 for c in meta.include) or meta.exclude:
        kinds.append("count")
    if any(c.color is not None for c in meta.include):
        kinds.append("color")
    if meta.tag != "counting":
        # replacing one of N counted objects would fail `count`, not `object`
        kinds.append("shape")
    if any(c.position is not None for c in meta.include):
        kinds.append("relation")
    return kinds


def _violated_layout(
    meta: Metadata, rng: random.Random, kind: str
) -> tuple[list[tuple[str, str]], str | None, str | None]:
    """Specs and relation for a scene that breaks one clause; also the relation that must NOT hold."""
    specs, rel = _layout(meta, rng)
    named = {c.cls for c in [*meta.include, *meta.exclude]}
    # the objects of each include clause occupy consecutive spec slots
    slots, start = [], 0
    for c in meta.include:
        slots.append(list(range(start, start + c.count)))
        start += c.count
    positioned = [i for i, c in enumerate(meta.include) if c.position is not None]
    # in a position prompt, breaking the target would also break the relation; break the subject
    pick = positioned[0] if positioned else None
    avoid = None
    if kind == "count":
        i = next(i for i, c in enumerate(meta.include) if c.count > 1 or meta.exclude)
        shape, color = specs[slots[i][0]]
        n = meta.include[i].count + rng.choice((-1, 1))
        free_color = meta.include[i].color is None
        group = [(shape, rng.choice(list(COLORS)) if free_color else color) for _ in range(n)]
        specs = specs[: slots[i][0]] + group + specs[slots[i][-1] + 1 :]
    elif kind == "color":
        coloured = [i for i, c in enumerate(meta.include) if c.color is not None]
        i = pick if pick is not None else rng.choice(coloured)
        asked = meta.include[i].color
        j = rng.choice(slots[i])
        specs[j] = (specs[j][0], rng.choice([c for c in COLORS if c != asked]))
    elif kind == "shape":
        i = pick if pick is not None else rng.randrange(len(meta.include))
        j = rng.choice(slots[i])
        specs[j] = (rng.choice([s for s in SHAPES if s not in named]), specs[j][1])
    elif kind == "relation":
        avoid = rel
        rel = rng.choice([r for r in RELATIONS if r != rel])
    return specs, rel, avoid


def violate(
    meta: Metadata,
    rng: random.Random,
    size: int = 64,
    kind: ViolationKind | None = None,
    distractors: bool = True,
) -> Scene:
    """A scene that violates exactly one clause of the given kind (a random applicable kind if None).

    count: N-1 or N+1 objects; color: one coloured object in another colour; shape: one required
    object replaced by a shape the prompt does not name; relation: the pair in another relation.
    Checked with rules.apply_rules: incorrect, and only the kind's dimension failed.
    """
    _check_vocabulary(meta)
    kinds = kinds_for(meta)
    if kind is None:
        kind = rng.choice(kinds)
    if kind not in kinds:
        raise ValueError(f"violation {kind!r} does not apply to a {meta.tag} prompt; choose one of {kinds}")
    want = KIND_DIMENSION[kind]
    for _ in range(200):
        specs, rel, avoid = _violated_layout(meta, rng, kind)
        scene = _draw(meta, rng, size, specs, rel, distractors)
        if avoid is not None and avoid in relation(scene.objects[1].box, scene.objects[0].box):
            continue
        ev = apply_rules(meta, scene.objects)
        if not ev.correct and [d for d, ok in ev.dimensions.items() if not ok] == [want]:
            return scene
    raise RuntimeError(f"no {kind} violation found for {meta.prompt!r} on a {size}px canvas")
