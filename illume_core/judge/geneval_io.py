"""GenEval's side of the judge: score one image against a metadata line, judge an image folder,
read and write results files, and summarise them as GenEval does."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from illume_core.judge.detect import detect
from illume_core.world.geneval import TAGS, Metadata, MetadataError, iter_metadata
from illume_core.world.rules import apply_rules


@dataclass
class Judgment:
    """GenEval's verdict on one image plus what the judge saw (JSON-serialisable `details`)."""

    correct: bool
    reason: str
    dimensions: dict[str, bool]
    details: dict


def judge_image(img: Image.Image | np.ndarray, meta: Metadata) -> Judgment:
    """Detect the objects in an image and score the metadata line on them with GenEval's rules."""
    found = detect(img)
    ev = apply_rules(meta, found.objects)
    details = {
        "objects": [d.to_dict() for d in found.objects],
        "unknown": [d.to_dict() for d in found.unknown],
        "specks": found.ignored_specks,
        "dimensions": dict(ev.dimensions),
    }
    return Judgment(correct=ev.correct, reason=ev.reason, dimensions=dict(ev.dimensions), details=details)


@dataclass
class ResultLine:
    """One line of GenEval's results jsonl (metadata and details as JSON strings, as GenEval writes)."""

    filename: str
    tag: str
    prompt: str
    correct: bool
    reason: str
    metadata: str
    details: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Skipped:
    """An input the judge could not read: the file, the line (for metadata) and why."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.path}{f':{self.line}' if self.line else ''}: {self.message}"


@dataclass
class JudgeReport:
    results: list[ResultLine] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


@dataclass
class Scores:
    """GenEval's summary: accuracy per tag, the overall score (unweighted mean over tags), counts."""

    per_tag: dict[str, float]
    overall: float
    n: dict[str, int]
    n_correct: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)


_SAMPLE = re.compile(r"\d+\.png")


def _load_png(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except UnidentifiedImageError:
        raise ValueError(
            "cannot read image (not an image file PIL recognises); re-save it as a PNG"
        ) from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"refused a decompression bomb ({e}); resize it to the canvas size first") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image ({e}); re-save it as a PNG") from None


def _work_items(root: Path, skipped: list[Skipped]) -> list[tuple[Metadata, str, Path]]:
    """(metadata, its JSON line, image path) for every readable prompt folder, in GenEval's layout."""
    items = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit()):
        meta_path = folder / "metadata.jsonl"
        samples = folder / "samples"
        images = sorted(p for p in samples.iterdir() if _SAMPLE.fullmatch(p.name)) if samples.is_dir() else []
        if not meta_path.is_file():
            skipped.append(
                Skipped(str(meta_path), None, f"missing metadata.jsonl; {len(images)} image(s) not judged")
            )
            continue
        try:
            lines = list(iter_metadata(meta_path))
        except (OSError, UnicodeDecodeError) as e:
            skipped.append(
                Skipped(str(meta_path), None, f"cannot read ({e}); {len(images)} image(s) not judged")
            )
            continue
        bad = [m for _, m in lines if isinstance(m, MetadataError)]
        if bad or len(lines) != 1:
            line, msg = (bad[0].line, str(bad[0]).split(": ", 1)[1]) if bad else (None, "")
            if not bad:
                msg = f"expected exactly one metadata line, found {len(lines)}"
            skipped.append(Skipped(str(meta_path), line, f"{msg}; {len(images)} image(s) not judged"))
            continue
        meta = lines[0][1]
        assert isinstance(meta, Metadata)
        if not images:
            skipped.append(Skipped(str(samples), None, "no samples/<NNNN>.png images in this prompt folder"))
            continue
        items.extend((meta, meta.dumps(), p) for p in images)
    return items


def judge_folder(root: str | Path, progress: Callable[[int, int], None] | None = None) -> JudgeReport:
    """Judge every image of a GenEval image folder (`<root>/<00000>/metadata.jsonl` + `samples/*.png`).

    Unreadable inputs (a corrupt PNG, a missing metadata.jsonl, a malformed metadata line) are
    recorded in `skipped` with the file (and line) and the rest of the folder is still judged.
    `progress(done, total)` is called after each image.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} is not a folder; pass a GenEval image folder (<dir>/<00000>/samples)"
        )
    report = JudgeReport()
    items = _work_items(root, report.skipped)
    for i, (meta, line, path) in enumerate(items, start=1):
        try:
            img = _load_png(path)
            j = judge_image(img, meta)
        except ValueError as e:
            report.skipped.append(Skipped(str(path), None, str(e)))
        else:
            report.results.append(
                ResultLine(str(path), meta.tag, meta.prompt, j.correct, j.reason, line, json.dumps(j.details))
            )
        if progress is not None:
            progress(i, len(items))
    return report


def write_results(path: str | Path, results: Iterable[ResultLine]) -> None:
    """Write GenEval's results jsonl."""
    with open(path, "w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps(r.to_dict()) + "\n")


def read_results(path: str | Path) -> list[ResultLine]:
    """Read a results jsonl (ours or GenEval's); a bad line raises ValueError naming file and line."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                d = json.loads(text)
                out.append(
                    ResultLine(
                        filename=str(d["filename"]),
                        tag=str(d["tag"]),
                        prompt=str(d.get("prompt", "")),
                        correct=bool(d["correct"]),
                        reason=str(d.get("reason", "")),
                        metadata=d["metadata"]
                        if isinstance(d.get("metadata"), str)
                        else json.dumps(d.get("metadata")),
                        details=d["details"]
                        if isinstance(d.get("details"), str)
                        else json.dumps(d.get("details")),
                    )
                )
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                raise ValueError(
                    f"{path}:{i}: not a GenEval results line ({type(e).__name__}: {e}); "
                    "expected keys filename, tag, correct"
                ) from None
    return out


def summarize(results: Sequence[ResultLine]) -> Scores:
    """GenEval's summary: per-tag accuracy and the overall score, the unweighted mean of tag scores."""
    n: dict[str, int] = {}
    ok: dict[str, int] = {}
    for r in results:
        n[r.tag] = n.get(r.tag, 0) + 1
        ok[r.tag] = ok.get(r.tag, 0) + int(r.correct)
    order = [t for t in TAGS if t in n] + [t for t in n if t not in TAGS]
    per_tag = {t: ok[t] / n[t] for t in order}
    overall = sum(per_tag.values()) / len(per_tag) if per_tag else 0.0
    return Scores(
        per_tag=per_tag, overall=overall, n={t: n[t] for t in order}, n_correct={t: ok[t] for t in order}
    )
