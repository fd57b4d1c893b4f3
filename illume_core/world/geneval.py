"""GenEval's file formats as typed models: prompt metadata lines and results lines.

GenEval (Ghosh et al. 2023) describes each prompt with a metadata line (tag, include/exclude
clauses, prompt). ShapesWorld prompts use exactly that format with shapes as classes, so the
real GenEval prompt file parses into the same model; classes outside ShapesWorld are reported.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from illume_core.world.scenes import COLORS, RELATIONS, SHAPES

TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
Tag = Literal["single_object", "two_object", "counting", "colors", "position", "color_attr"]


class Clause(BaseModel):
    """One include/exclude clause: `count` objects of `class` (with `color`, at `position`)."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    cls: str = Field(alias="class", min_length=1)
    count: int = Field(default=1, ge=1)
    color: str | None = None
    # ("left of", j): this object stands left of the object of include clause j
    position: tuple[str, int] | None = None

    @field_validator("position")
    @classmethod
    def _known_relation(cls, v: tuple[str, int] | None) -> tuple[str, int] | None:
        if v is not None and v[0] not in RELATIONS:
            raise ValueError(f"unknown relation {v[0]!r}; expected one of {list(RELATIONS)}")
        return v

    def dump(self) -> dict:
        d: dict = {"class": self.cls, "count": self.count}
        if self.color is not None:
            d["color"] = self.color
        if self.position is not None:
            d["position"] = [self.position[0], self.position[1]]
        return d


class Metadata(BaseModel):
    """One GenEval metadata line."""

    model_config = ConfigDict(extra="forbid")

    tag: Tag
    include: list[Clause] = Field(min_length=1)
    exclude: list[Clause] = Field(default_factory=list)
    prompt: str = Field(min_length=1)

    @model_validator(mode="after")
    def _positions_name_clauses(self) -> Metadata:
        for i, c in enumerate(self.include):
            if c.position is not None and not (0 <= c.position[1] < len(self.include) and c.position[1] != i):
                raise ValueError(
                    f"include.{i}.position names include clause {c.position[1]}; "
                    f"it must be the index of another include clause (0..{len(self.include) - 1})"
                )
        return self

    def dump(self) -> dict:
        d: dict = {"tag": self.tag, "include": [c.dump() for c in self.include]}
        if self.exclude:
            d["exclude"] = [c.dump() for c in self.exclude]
        d["prompt"] = self.prompt
        return d

    def dumps(self) -> str:
        return json.dumps(self.dump())

    def out_of_vocabulary(self) -> list[str]:
        """Classes and colours this line names that ShapesWorld cannot draw (empty if none)."""
        bad = []
        for c in [*self.include, *self.exclude]:
            if c.cls not in SHAPES:
                bad.append(f"class {c.cls!r}")
            if c.color is not None and c.color not in COLORS:
                bad.append(f"colour {c.color!r}")
        return bad


class MetadataError(ValueError):
    """A metadata line that could not be parsed, with the file and line it came from."""

    def __init__(self, path: str | Path, line: int, message: str):
        self.path, self.line = str(path), line
        super().__init__(f"{path}:{line}: {message}")


def parse_line(text: str, path: str | Path = "<string>", line: int = 1) -> Metadata:
    """Parse one metadata line; raise MetadataError naming the file and line on any problem."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise MetadataError(path, line, f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(raw, dict):
        raise MetadataError(path, line, f"expected a JSON object, got {type(raw).__name__}")
    try:
        return Metadata.model_validate(raw)
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'line'}: {x['msg']}" for x in e.errors())
        raise MetadataError(path, line, f"not a GenEval metadata line ({errs})") from None


def iter_metadata(path: str | Path) -> Iterator[tuple[int, Metadata | MetadataError]]:
    """Yield (line number, Metadata or the MetadataError) for each non-empty line of a jsonl file.

    Errors are yielded, not raised, so one bad line never hides the rest of the file. Lines are
    decoded one by one, so a line that is not UTF-8 is one error too; a leading BOM is allowed.
    """
    with open(path, "rb") as f:
        for i, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8-sig" if i == 1 else "utf-8")
            except UnicodeDecodeError as e:
                yield (
                    i,
                    MetadataError(
                        path,
                        i,
                        f"not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1}); re-save the file as UTF-8",
                    ),
                )
                continue
            if not text.strip():
                continue
            try:
                yield i, parse_line(text, path, i)
            except MetadataError as e:
                yield i, e


def read_metadata(path: str | Path, strict: bool = True) -> list[Metadata]:
    """Read a GenEval prompt file. With strict=True the first bad line raises MetadataError."""
    out = []
    for _, m in iter_metadata(path):
        if isinstance(m, MetadataError):
            if strict:
                raise m
            continue
        out.append(m)
    return out


def write_metadata(path: str | Path, items: list[Metadata]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for m in items:
            f.write(m.dumps() + "\n")
