import json
import random

from typer.testing import CliRunner

from flows.cli import app
from illume_core.world.prompts import generate_prompts, scene_for, violate
from illume_core.world.scenes import render


def test_judge_then_scores(tmp_path):
    rng = random.Random(4)
    folder = tmp_path / "images"
    metas = generate_prompts(seed=2, per_tag=1)
    for i, meta in enumerate(metas):
        d = folder / f"{i:05d}"
        (d / "samples").mkdir(parents=True)
        (d / "metadata.jsonl").write_text(meta.dumps() + "\n")
        render(scene_for(meta, rng)).save(d / "samples" / "0000.png")
        # single_object gets a second, wrong image: its score must be 0.5
        if meta.tag == "single_object":
            render(violate(meta, rng)).save(d / "samples" / "0001.png")
    (folder / "00001" / "samples" / "0001.png").write_bytes(b"broken")
    out = tmp_path / "results.jsonl"
    runner = CliRunner()
    r = runner.invoke(app, ["judge", str(folder), "--outfile", str(out)])
    assert r.exit_code == 0, r.output
    assert "judged 7 image(s), skipped 1 item(s)" in r.output and "00001/samples/0001.png" in r.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 7 and set(lines[0]) == {
        "filename", "tag", "prompt", "correct", "reason", "metadata", "details",
    }  # fmt: skip
    r = runner.invoke(app, ["scores", str(out), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["per_tag"]["single_object"] == 0.5 and s["n"]["single_object"] == 2
    assert all(s["per_tag"][t] == 1.0 for t in s["per_tag"] if t != "single_object")
    assert abs(s["overall"] - 5.5 / 6) < 1e-9
    r = runner.invoke(app, ["scores", str(out)])
    assert r.exit_code == 0 and "overall" in r.output and "single_object" in r.output
    r = runner.invoke(app, ["scores", str(tmp_path / "nope.jsonl")])
    assert r.exit_code != 0 and "run `illume judge` first" in r.output
