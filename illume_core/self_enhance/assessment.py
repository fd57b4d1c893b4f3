"""ILLUME's self-assessment, text side: the question, the answer format, its parser, the correction turn.

An assessment gives a yes/no verdict and a short reason for each of ILLUME's four dimensions
(object, count, color, spatial). Labels come from `rules.apply_rules` over the objects in a scene,
so they agree with the judge. The answer is one short line, because a tiny model with a 256-token
context must write it after 64 image tokens:

    object: yes, a blue diamond and a yellow cross; count: yes; color: no, the diamond is red; spatial: yes

A "yes" carries a reason only where it names what was seen (object; count for counting prompts).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from illume_core.world.geneval import Clause, Metadata
from illume_core.world.rules import DIMENSIONS, Evaluation, Found
from illume_core.world.scenes import NUMBERS, SHAPES, relation

__all__ = [
    "DIMENSIONS",
    "Assessment",
    "DimensionAssessment",
    "ParsedAssessment",
    "assessment_question",
    "correction_turn",
    "format_assessment",
    "from_evaluation",
    "parse_assessment",
]

# the parser reads at most this much text: a runaway generation cannot make it slow
MAX_PARSE_CHARS = 4096


class DimensionAssessment(BaseModel):
    """One dimension's verdict and its short reason ('' when there is nothing to say)."""

    model_config = ConfigDict(frozen=True)

    verdict: Literal["yes", "no"]
    reason: str = ""


class Assessment(BaseModel):
    """A verdict and reason for each of the four dimensions."""

    model_config = ConfigDict(frozen=True)

    object: DimensionAssessment
    count: DimensionAssessment
    color: DimensionAssessment
    spatial: DimensionAssessment

    @property
    def all_yes(self) -> bool:
        return all(getattr(self, d).verdict == "yes" for d in DIMENSIONS)

    @property
    def verdicts(self) -> dict[str, bool]:
        """{dimension: passed}, the shape of rules.Evaluation.dimensions."""
        return {d: getattr(self, d).verdict == "yes" for d in DIMENSIONS}


class ParsedAssessment(BaseModel):
    """What `parse_assessment` made of a text: ok (all four), partial (some) or failed (none)."""

    status: Literal["ok", "partial", "failed"]
    assessment: Assessment | None = None
    dimensions: dict[str, DimensionAssessment]
    raw: str
    error: str | None = None


# ---------------------------------------------------------------- labels from a scene


def _noun(shape: str, color: str | None = None, n: int = 1) -> str:
    words = SHAPES.get(shape, shape) if n != 1 else shape
    if color:
        words = f"{color} {words}"
    if n == 1:
        return f"{'an' if words[:1] in 'aeiou' else 'a'} {words}"
    return f"{NUMBERS.get(n, str(n))} {words}"


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _kept(req: Clause, objects: Sequence[Found]) -> list[Found]:
    """The objects GenEval's rule keeps for a clause (asked colour first), as rules.apply_rules does."""
    found = [o for o in objects if o.shape == req.cls]
    if req.color is not None:
        found.sort(key=lambda o: o.color != req.color)
    return found[: req.count]


def _object_reason(meta: Metadata, objects: Sequence[Found], ok: bool) -> str:
    if not ok:
        missing = [c.cls for c in meta.include if not any(o.shape == c.cls for o in objects)]
        return _and([f"no {s}" for s in dict.fromkeys(missing)]) if missing else "objects missing"
    parts = []
    for c in meta.include:
        kept = _kept(c, objects)
        if c.count > 1 or meta.tag == "counting":
            continue  # the count line names counted objects
        shown = kept[0].color if kept and c.color is not None else None
        parts.append(_noun(c.cls, shown))
    return _and(parts) if parts else ""


def _count_reason(meta: Metadata, objects: Sequence[Found], ok: bool) -> str:
    counted = [c for c in meta.include if c.count > 1 or meta.tag == "counting"]
    if not counted:
        return ""
    c = counted[0]
    n = sum(1 for o in objects if o.shape == c.cls)
    if ok:
        return _noun(c.cls, None, n)
    return f"{_noun(c.cls, None, n) if n else 'no ' + SHAPES.get(c.cls, c.cls)} instead of {NUMBERS.get(c.count, c.count)}"


def _color_reason(meta: Metadata, objects: Sequence[Found], ok: bool) -> str:
    if ok:
        return ""
    for c in meta.include:
        kept = _kept(c, objects)
        if c.color is not None and kept and any(o.color != c.color for o in kept):
            wrong = next(o.color for o in kept if o.color != c.color)
            return f"the {c.cls} is {wrong}"
    return "wrong colour"


def _spatial_reason(meta: Metadata, objects: Sequence[Found], ok: bool) -> str:
    if ok:
        return ""
    for c in meta.include:
        if c.position is None or not 0 <= c.position[1] < len(meta.include):
            continue
        target = meta.include[c.position[1]]
        a, b = _kept(c, objects), _kept(target, objects)
        if a and b:
            rels = relation(a[0].box, b[0].box)
            where = " and ".join(sorted(rels)) if rels else "not " + c.position[0]
            return f"the {c.cls} is {where} the {target.cls}"
    return "wrong place"


def from_evaluation(meta: Metadata, objects: Sequence[Found], ev: Evaluation) -> Assessment:
    """The assessment of a scene: verdicts from the rules' dimensions, reasons from the objects."""
    reasons = {
        "object": _object_reason,
        "count": _count_reason,
        "color": _color_reason,
        "spatial": _spatial_reason,
    }
    dims = {}
    for d in DIMENSIONS:
        ok = ev.dimensions.get(d, True)
        dims[d] = DimensionAssessment(verdict="yes" if ok else "no", reason=reasons[d](meta, objects, ok))
    return Assessment(**dims)


# ---------------------------------------------------------------- the conversation text


def assessment_question(prompt: str) -> str:
    """The user turn that asks for an assessment of an image against its prompt."""
    return f'does the image match "{prompt}"? check object, count, color, spatial.'


def format_assessment(a: Assessment) -> str:
    """One line, 'dimension: verdict[, reason]' joined by '; ', in DIMENSIONS order."""
    parts = []
    for d in DIMENSIONS:
        da: DimensionAssessment = getattr(a, d)
        parts.append(f"{d}: {da.verdict}, {da.reason}" if da.reason else f"{d}: {da.verdict}")
    return "; ".join(parts)


def correction_turn(meta: Metadata) -> str:
    """The user turn after a bad assessment (ILLUME's reformat): ask for the image again."""
    return f"the image is wrong; draw it again correctly: {meta.prompt}"


_ALIASES = {"object": "object", "objects": "object", "count": "count", "counting": "count"}
_ALIASES |= {"color": "color", "colour": "color", "colors": "color", "spatial": "spatial"}
_ALIASES |= {"position": "spatial"}
_KEY = r"""["']?\b(?:objects?|count(?:ing)?|colou?rs?|spatial|position)\b["']?\s*[:=]"""
# a reason runs to ';', a newline, a brace, or the next "dimension:" (one-line JSON has no ';')
_ITEM = re.compile(
    r"""["']?\b(objects?|count(?:ing)?|colou?rs?|spatial|position)\b["']?\s*[:=]\s*["']?\s*(yes|no)\b"""
    r"""[\s"',]*((?:(?!""" + _KEY + r""")[^;\n{}])*)""",
    re.IGNORECASE,
)


def parse_assessment(text: object) -> ParsedAssessment:
    """Read an assessment back from model text; never raises.

    Case and whitespace are free, ';' or newlines separate dimensions, 'colour' and quotes are
    accepted, the first mention of a dimension wins. All four found: ok; some: partial; none:
    failed (with `error` saying why).
    """
    if not isinstance(text, str):
        raw = "" if text is None else repr(text)[:MAX_PARSE_CHARS]
        return ParsedAssessment(status="failed", dimensions={}, raw=raw, error="no text to parse")
    raw = text[:MAX_PARSE_CHARS]
    found: dict[str, DimensionAssessment] = {}
    for m in _ITEM.finditer(raw):
        d = _ALIASES[m.group(1).lower()]
        if d in found:
            continue
        reason = " ".join(m.group(3).split()).strip(" \"',.")
        found[d] = DimensionAssessment(verdict=m.group(2).lower(), reason=reason)
    dims = {d: found[d] for d in DIMENSIONS if d in found}
    if len(dims) == len(DIMENSIONS):
        return ParsedAssessment(status="ok", assessment=Assessment(**dims), dimensions=dims, raw=raw)
    if dims:
        missing = ", ".join(d for d in DIMENSIONS if d not in dims)
        return ParsedAssessment(status="partial", dimensions=dims, raw=raw, error=f"missing {missing}")
    return ParsedAssessment(
        status="failed", dimensions={}, raw=raw, error="no 'dimension: yes/no' item found in the text"
    )
