import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from flows.cli import app
from illume_core.world.geneval import parse_line, read_metadata
from illume_core.world.prompts import Holdout

runner = CliRunner()
GOOD = '{"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "red"}], "prompt": "a photo of a red circle"}'
BENCH = (
    '{"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"}'
)


def test_prompts_then_render_in_geneval_layout(tmp_path):
    r = runner.invoke(app, ["prompts", "--out", str(tmp_path / "p"), "--per-tag", "2", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "position" in r.output and "12" in r.output
    path = tmp_path / "p" / "evaluation_metadata.jsonl"
    metas = read_metadata(path)
    assert len(metas) == 12 and len({m.tag for m in metas}) == 6
    r = runner.invoke(
        app,
        ["render", str(path), "--outdir", str(tmp_path / "img"), "--images-per-prompt", "2", "--size", "48"],
    )
    assert r.exit_code == 0, r.output
    assert "rendered 12 prompts (24 images)" in r.output
    for i, m in enumerate(metas):
        folder = tmp_path / "img" / f"{i:05d}"
        assert parse_line((folder / "metadata.jsonl").read_text()) == m
        pngs = sorted(p.name for p in (folder / "samples").iterdir())
        assert pngs == ["0000.png", "0001.png"]
        img = Image.open(folder / "samples" / "0000.png")
        assert img.size == (48, 48) and img.mode == "RGB"


def test_render_skips_bad_lines_and_fails_when_nothing_renders(tmp_path):
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join([BENCH, "{not json", GOOD, json.dumps({"tag": "nope"})]) + "\n")
    r = runner.invoke(
        app, ["render", str(mixed), "--outdir", str(tmp_path / "out"), "--images-per-prompt", "1"]
    )
    assert r.exit_code == 0, r.output
    assert f"{mixed}:1" in r.output and "out of vocabulary" in r.output and "bench" in r.output
    assert f"{mixed}:2" in r.output and f"{mixed}:4" in r.output
    assert "rendered 1 prompts" in r.output and "skipped 2 malformed, 1 out of vocabulary" in r.output
    # the folder number is the line index, as in GenEval
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["00002"]
    img = np.asarray(Image.open(tmp_path / "out" / "00002" / "samples" / "0000.png"))
    assert ((img == (230, 25, 35)).all(axis=2)).any()

    only_bad = tmp_path / "bad.jsonl"
    only_bad.write_text(BENCH + "\n")
    r = runner.invoke(app, ["render", str(only_bad), "--outdir", str(tmp_path / "none")])
    assert r.exit_code == 1 and "no prompt" in r.output


def test_prompts_holdout_split_and_bad_spec(tmp_path):
    r = runner.invoke(
        app,
        ["prompts", "--out", str(tmp_path), "--per-tag", "5", "--holdout", "default", "--split", "heldout"],
    )
    assert r.exit_code == 0, r.output
    metas = read_metadata(tmp_path / "evaluation_metadata.jsonl")
    assert metas and all(Holdout.default().is_heldout(m) for m in metas)
    r = runner.invoke(app, ["prompts", "--out", str(tmp_path), "--holdout", "color_shape:teal/circle"])
    assert r.exit_code != 0 and "teal" in r.output
    r = runner.invoke(app, ["prompts", "--out", str(tmp_path), "--split", "test"])
    assert r.exit_code != 0


def test_a_lake_uri_is_refused_never_rewritten_into_a_local_folder(tmp_path, monkeypatch):
    """`--lake s3://bucket/prefix` once became a local folder named `s3:`. Every command takes it
    as text now: s3:// lakes work (tests/test_bucket_pipeline.py), any other URI is refused."""
    from typer.testing import CliRunner

    from flows.cli import app

    monkeypatch.chdir(tmp_path)
    for cmd in (
        ["report"],
        ["train", "--budget", "smoke"],
        ["demo", "--budget", "smoke"],
        ["round"],
        ["rerun", "--round", "1", "--task", "assess"],
        ["eval"],
        ["generate", "a photo of a circle", "-o", "x.png"],
        ["sql", "SELECT 1"],
    ):
        for uri in ("gs://illume-bar/lake", "s3:/illume-bar/lake", "az://illume-bar/lake"):
            out = CliRunner().invoke(app, [*cmd, "--lake", uri])
            flat = " ".join(out.output.replace("│", " ").split())  # rich wraps the message in a box
            assert out.exit_code == 2, out.output
            assert "are not supported" in flat and "illume-bar" in flat, flat
    assert list(tmp_path.iterdir()) == []  # no folder named `s3:` or `gs:`
