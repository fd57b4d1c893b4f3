"""The bad-input corpus (tests/bad_inputs/cases.json) driven through the real entry points.

Each case ends in its expected outcome: an error whose message names the input and what to do,
a rejection that is counted and recorded while the rest of the input is still used, or ok.
Anything else (a traceback, a vague message) fails. Where something was stored before the bad
input (a lake partition, a folder of images, a checkpoint), it is checked unchanged after it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from flows.cli import app

CORPUS = Path(__file__).parent / "bad_inputs"
CASES: list[dict] = json.loads((CORPUS / "cases.json").read_text(encoding="utf-8"))
GOOD_LINE = {
    "tag": "single_object",
    "include": [{"class": "circle", "count": 1}],
    "prompt": "a photo of a circle",
}
# wide terminal: rich must not wrap the messages the regexes read
runner = CliRunner(env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
torch.set_num_threads(1)


@dataclass
class Outcome:
    status: str  # "ok", "error" or "rejected"
    message: str = ""
    name: str = ""  # how the input is named in messages (file name or path)


def tree_digest(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(s in p.name for s in skip)
    }


def flat(text: str) -> str:
    """CLI output with rich's panel borders removed and whitespace collapsed."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def cli(args: list[str]) -> tuple[int, str]:
    r = runner.invoke(app, args)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise AssertionError(f"illume {args[0]} crashed: {r.exception!r}\n{r.output}") from r.exception
    return r.exit_code, flat(r.output)


def library(fn, *args, **kwargs) -> Outcome:
    """Run a library entry point: only the documented error types count as a clear error."""
    try:
        fn(*args, **kwargs)
    except (ValueError, OSError, RuntimeError) as e:
        return Outcome("error", str(e))
    return Outcome("ok")


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory) -> Path:
    """A GenEval image folder with two correct prompt folders."""
    from illume_core.world.geneval import parse_line
    from illume_core.world.prompts import scene_for
    from illume_core.world.scenes import render

    root = tmp_path_factory.mktemp("judge") / "imgs"
    meta = parse_line(json.dumps(GOOD_LINE))
    for i in range(2):
        (root / f"{i:05d}" / "samples").mkdir(parents=True)
        (root / f"{i:05d}" / "metadata.jsonl").write_text(meta.dumps() + "\n")
        render(scene_for(meta, random.Random(i), 64)).save(root / f"{i:05d}" / "samples" / "0000.png")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A micro checkpoint (model, semantic tokenizer, text tokenizer), saved once."""
    from model_helpers import micro_model, text_tokenizer

    from illume_core.model.checkpoint import save_checkpoint
    from illume_core.model.vision_tokenizer import SemanticTokenizer

    model, proc = micro_model()
    path = tmp_path_factory.mktemp("ck") / "ck"
    save_checkpoint(path, model, SemanticTokenizer(proc.cfg), text_tokenizer(), stage=1)
    return path


def prompt_rows(round: int, texts: list[str]) -> list[dict]:
    return [
        {
            "round": round,
            "prompt_id": f"r{round}-p{i}",
            "tag": "single_object",
            "prompt": t,
            "metadata": json.dumps({**GOOD_LINE, "prompt": t}),
            "split": "train",
        }
        for i, t in enumerate(texts)
    ]


@pytest.fixture()
def lake(tmp_path):
    """A lake holding one prompts partition (round 1): what a bad input must not lose."""
    from storage.lake import Lake

    lk = Lake(tmp_path / "lake", grace_s=0.0)
    lk.write_partition(
        "prompts", 1, prompt_rows(1, ["a photo of a circle", "a photo of a square"]), producer="t"
    )
    return lk


@pytest.fixture(scope="module")
def sql_lake(tmp_path_factory):
    """One lake for every SQL case: each checks it unchanged, so they may share it."""
    from storage.lake import Lake

    lk = Lake(tmp_path_factory.mktemp("sql") / "lake")
    lk.write_partition("prompts", 1, prompt_rows(1, ["a photo of a circle"]), producer="t")
    return lk


# ---------------------------------------------------------------------------------- drivers


def drive_judge(case: dict, tmp_path: Path, good_folder: Path, **_) -> Outcome:
    root = tmp_path / "imgs"
    shutil.copytree(good_folder, root)
    bad = root / "00002" / "samples" / "0000.png"
    bad.parent.mkdir(parents=True)
    (root / "00002" / "metadata.jsonl").write_text(json.dumps(GOOD_LINE) + "\n")
    shutil.copyfile(CORPUS / case["input"], bad)
    before = tree_digest(root)
    code, out = cli(["judge", str(root), "--outfile", str(tmp_path / "results.jsonl")])
    assert tree_digest(root) == before, "judging changed the image folder"
    if code != 0:
        return Outcome("error", out)
    judged = [json.loads(x)["filename"] for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    good = [str(root / f"{i:05d}" / "samples" / "0000.png") for i in range(2)]
    assert set(good) <= set(judged), "a bad image kept the good ones from being judged"
    name = "00002/samples/0000.png"
    if str(bad) in judged:
        return Outcome("ok", out, name)
    assert "skipped 1 item(s)" in out, out
    line = out[out.index(f"skipped {bad}") :]
    return Outcome("rejected", line, name)


def drive_from_png(case: dict, **_) -> Outcome:
    from illume_core.model.images import from_png

    return library(from_png, (CORPUS / case["input"]).read_bytes())


def drive_judge_image(case: dict, tmp_path: Path, **_) -> Outcome:
    from PIL import Image

    from illume_core.judge import _load_png, judge_image
    from illume_core.world.geneval import parse_line

    side = case["input"]["side"]
    path = tmp_path / "bomb.png"
    Image.new("L", (side, side), 0).save(path, compress_level=9)
    assert path.stat().st_size < 100_000  # small on disk, 36 M pixels decoded
    return library(lambda: judge_image(_load_png(path), parse_line(json.dumps(GOOD_LINE))))


def drive_render(case: dict, tmp_path: Path, **_) -> Outcome:
    from illume_core.world.geneval import Metadata

    src = CORPUS / case["input"]
    out_dir = tmp_path / "out"
    code, out = cli(
        ["render", str(src), "--outdir", str(out_dir), "--images-per-prompt", "1", "--size", "48"]
    )
    name = src.name
    if code != 0:
        return Outcome("error", out, name)
    # folder names are line numbers, never prompt text; metadata round-trips the prompt exactly
    lines = src.read_bytes().split(b"\n")
    for f in out_dir.rglob("*"):
        rel = f.relative_to(out_dir).as_posix()
        assert re.fullmatch(r"\d{5}(/metadata\.jsonl|/samples(/\d{4}\.png)?)?", rel), rel
        if f.name == "metadata.jsonl":
            stored = Metadata.model_validate_json(f.read_text(encoding="utf-8"))
            original = json.loads(lines[int(f.parent.name)].decode("utf-8-sig"))
            assert stored.prompt == original["prompt"]
    m = re.search(r"skipped (\d+) malformed, (\d+) out of vocabulary, (\d+) unplaceable", out)
    assert m is not None, out
    if sum(map(int, m.groups())) == 0:
        return Outcome("ok", out, name)
    return Outcome("rejected", out, name)


def drive_read_metadata(case: dict, **_) -> Outcome:
    from illume_core.world.geneval import read_metadata

    return library(read_metadata, CORPUS / case["input"])


def drive_scores(case: dict, **_) -> Outcome:
    src = CORPUS / case["input"]
    code, out = cli(["scores", str(src), "--json"])
    return Outcome("ok" if code == 0 else "error", out, src.name)


def drive_get_preset(case: dict, **_) -> Outcome:
    from illume_core.model.config import get_preset

    return library(get_preset, case["input"]["name"], **case["input"].get("overrides", {}))


def mutate(ck: Path, mutation: dict) -> None:
    if "flip" in mutation:
        path = ck / mutation["flip"]
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    if "delete" in mutation:
        (ck / mutation["delete"]).unlink()
    if "write" in mutation:
        (ck / mutation["write"][0]).write_text(mutation["write"][1])
    if mutation.get("replace_with_file"):
        shutil.rmtree(ck)
        ck.write_text("not a checkpoint")


def drive_load_checkpoint(case: dict, tmp_path: Path, checkpoint: Path, **_) -> Outcome:
    from illume_core.model.checkpoint import load_checkpoint

    ck = tmp_path / "ck"
    shutil.copytree(checkpoint, ck)
    mutate(ck, case["input"])
    before = tree_digest(ck) if ck.is_dir() else ck.read_bytes()
    outcome = library(load_checkpoint, ck)
    assert (tree_digest(ck) if ck.is_dir() else ck.read_bytes()) == before, "loading changed the checkpoint"
    return outcome


def drive_model_cli(case: dict, tmp_path: Path, checkpoint: Path, **_) -> Outcome:
    verb = case["entry"].split()[1]
    spec = case["input"]
    ck = tmp_path / "ck"
    shutil.copytree(checkpoint, ck)
    mutate(ck, spec)
    image = CORPUS / spec.get("image", "images/rgba.png")
    where = ["--lake", str(tmp_path / "no-lake")] if spec.get("no_lake") else ["--checkpoint", str(ck)]
    if verb == "ask":
        args = ["ask", str(image), "how many circles are there?", *where, "--max-new-tokens", "2"]
    else:
        args = ["generate", "a photo of a circle", "-o", str(tmp_path / "out.png"), *where]
    code, out = cli(args)
    return Outcome("ok" if code == 0 else "error", out, image.name)


def drive_lake_root(case: dict, tmp_path: Path, **_) -> Outcome:
    from storage.lake import Lake

    blocker = tmp_path / "a-file"
    blocker.write_text("I am a file")
    root = blocker / "lake" if case["input"]["root"] == "under_file" else blocker
    outcome = library(Lake, root)
    assert blocker.read_text() == "I am a file"
    return Outcome(outcome.status, outcome.message, str(root))


def drive_write_partition(case: dict, tmp_path: Path, lake, monkeypatch, **_) -> Outcome:
    import storage.lake as lake_mod
    from storage.catalog import query

    spec = case["input"]
    old = lake.digest("prompts", 1)
    old_manifest = lake.manifest("prompts")
    if "prompt" in spec:
        text = spec["prompt"]
        outcome = library(lake.write_partition, "prompts", 2, prompt_rows(2, [text]), producer="t")
        back = lake.read("prompts", 2).column("prompt").to_pylist()
        assert back == [text], "the prompt text did not round-trip exactly"
        # queried back with the value quoted as SQL text: one row, the same text, nothing else changed
        quoted = "'" + text.replace("'", "''") + "'"
        if "\u0000" not in text:  # DuckDB's SQL text cannot hold NUL; the Parquet round trip above does
            rows = query(lake, f"SELECT prompt FROM prompts WHERE prompt = {quoted}").to_pylist()
            assert rows == [{"prompt": text}]
        assert query(lake, "SELECT count(*) AS n FROM prompts").to_pylist() == [{"n": 3}]
        assert lake.digest("prompts", 1) == old
        files = [p.relative_to(lake.root).as_posix() for p in Path(lake.root).rglob("*") if p.is_file()]
        assert not [f for f in files if "etc" in f or "passwd" in f or "DROP" in f], files
        return outcome
    table = spec.get("table", "prompts")
    fault = spec.get("enospc_at")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if fault == "write_table":
        monkeypatch.setattr(lake_mod.pq, "write_table", full)
    elif fault == "manifest":
        monkeypatch.setattr(lake_mod.Lake, "_write_manifest", full)
    outcome = library(
        lake.write_partition,
        table,
        1,
        prompt_rows(1, ["a photo of a cross"]),
        producer="t",
        part=spec.get("part"),
    )
    monkeypatch.undo()
    # nothing already stored was lost, and a fresh writer finds a clean lake
    assert lake.digest("prompts", 1) == old
    assert lake.manifest("prompts")["files"] == old_manifest["files"]
    fresh = lake_mod.Lake(lake.root, grace_s=0.0)
    assert fresh.digest("prompts", 1) == old
    with fresh.writer("check"):
        pass
    leftovers = [
        p for p in Path(lake.root).rglob("*") if p.is_file() and ("_staging" in p.parts or p.suffix == ".tmp")
    ]
    assert not leftovers, leftovers
    if fault:  # once space is back, the same write goes through
        fresh.write_partition("prompts", 1, prompt_rows(1, ["a photo of a cross"]), producer="t")
        assert fresh.read("prompts", 1).column("prompt").to_pylist() == ["a photo of a cross"]
    return outcome


def drive_sql(case: dict, tmp_path: Path, sql_lake, **_) -> Outcome:
    lake = sql_lake
    before = tree_digest(Path(lake.root))
    code, out = cli(["sql", case["input"], "--lake", lake.root])
    assert tree_digest(Path(lake.root)) == before, "a query changed the lake"
    assert not list(Path("/tmp").glob("illume-bad-input*")), "a query wrote outside the lake"
    return Outcome("ok" if code == 0 else "error", out)


def drive_parse_assessment(case: dict, **_) -> Outcome:
    from illume_core.self_enhance.assessment import MAX_PARSE_CHARS, parse_assessment

    spec = case["input"]
    if isinstance(spec, str):
        text: object = spec
    elif "repeat" in spec:
        text = spec["repeat"] * spec["times"]
    elif "bytes" in spec:
        text = bytes.fromhex(spec["bytes"])
    else:
        text = None
    t0 = time.perf_counter()
    parsed = parse_assessment(text)
    assert time.perf_counter() - t0 < 1.0, "an endless output made the parser slow"
    assert len(parsed.raw) <= MAX_PARSE_CHARS  # what is recorded is bounded too
    if parsed.status == "ok":
        return Outcome("ok")
    assert parsed.error, "a rejected output must say why"
    return Outcome("rejected", f"{parsed.status}: {parsed.error}")


def drive_to_pil(case: dict, **_) -> Outcome:
    from illume_core.model.images import to_pil

    return library(to_pil, torch.full((2, 3, 8, 8), float(case["input"]["fill"])))


def drive_train_loop(case: dict, **_) -> Outcome:
    from train_helpers import train_checkpointing_every_step

    bad_step, bad_value = case["input"]["at_step"], float(case["input"]["loss"])
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    calls = {"n": 0}
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    saved: list[int] = []

    def loss_fn(m: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        loss = m(batch).pow(2).mean()
        return loss * bad_value if calls["n"] == bad_step + 1 else loss

    def progress(step: int, loss: float, lr: float) -> None:
        snapshots[step] = {k: v.clone() for k, v in model.state_dict().items()}

    batches = iter(torch.ones(4, 4) for _ in range(10))
    outcome = library(train_checkpointing_every_step, model, batches, 5, loss_fn, progress, saved)
    # the weights are those after the last finite step, and no checkpoint holds the bad step
    assert saved == list(range(1, bad_step + 1))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, snapshots[bad_step][k])
    return outcome


DRIVERS = {
    "illume judge": drive_judge,
    "from_png": drive_from_png,
    "judge_image": drive_judge_image,
    "illume render": drive_render,
    "read_metadata": drive_read_metadata,
    "illume scores": drive_scores,
    "get_preset": drive_get_preset,
    "load_checkpoint": drive_load_checkpoint,
    "illume ask": drive_model_cli,
    "illume generate": drive_model_cli,
    "Lake": drive_lake_root,
    "Lake.write_partition": drive_write_partition,
    "illume sql": drive_sql,
    "parse_assessment": drive_parse_assessment,
    "to_pil": drive_to_pil,
    "train_loop": drive_train_loop,
}


def test_manifest_is_what_the_script_writes():
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 100
    assert {c["entry"] for c in CASES} <= set(DRIVERS)
    assert {c["expect"] for c in CASES} == {"ok", "error", "rejected"}
    for c in CASES:
        assert c["expect"] == "ok" or c["message"], (
            f"{c['id']}: an error or rejection must say what it checks"
        )
        if isinstance(c["input"], str) and (CORPUS / c["input"]).suffix in (".png", ".jsonl"):
            assert (CORPUS / c["input"]).is_file(), c["id"]


def needs(case: dict) -> list[str]:
    fixtures = {"illume judge": "good_folder", "Lake.write_partition": "lake", "illume sql": "sql_lake"}
    if case["entry"] in ("load_checkpoint", "illume ask", "illume generate"):
        return ["checkpoint"]
    return [fixtures[case["entry"]]] if case["entry"] in fixtures else []


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case(case: dict, tmp_path: Path, request, monkeypatch) -> None:
    src = CORPUS / case["input"] if isinstance(case["input"], str) and "/" in case["input"] else None
    before = src.read_bytes() if src is not None and src.is_file() else None
    extra = {name: request.getfixturevalue(name) for name in needs(case)}
    outcome = DRIVERS[case["entry"]](case=case, tmp_path=tmp_path, monkeypatch=monkeypatch, **extra)
    assert outcome.status == case["expect"], f"{case['id']}: got {outcome.status}: {outcome.message}"
    name = outcome.name or (src.name if src is not None else "")
    for pattern in case["message"]:
        rx = pattern.replace("{input}", re.escape(name))
        assert re.search(rx, outcome.message), f"{case['id']}: {rx!r} not in message: {outcome.message}"
    if before is not None:
        assert src.read_bytes() == before, "the input file was changed"
