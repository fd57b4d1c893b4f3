"""`illume eval --prompts FILE`: any GenEval prompt file, sampled, judged and recorded."""

from __future__ import annotations

from storage import registry


def test_a_geneval_prompt_file_is_sampled_judged_written_and_recorded(smoke_lake, tmp_path):
    """`illume eval --prompts FILE`: GenEval's folder layout, its results jsonl, the evaluations rows."""
    import shutil

    from flows.geneval_eval import evaluate_prompt_file
    from illume_core.judge import read_results

    lake = tmp_path / "lake"
    shutil.copytree(smoke_lake, lake)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        '{"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "red"}], '
        '"prompt": "a photo of a red circle"}\n'
        '{"tag": "single_object", "include": [{"class": "giraffe", "count": 1}], "prompt": "a photo of a giraffe"}\n'
        '{"tag": "counting", "include": [{"class": "square", "count": 2}], "prompt": "a photo of two squares"}\n'
    )
    out = tmp_path / "out"
    rows = evaluate_prompt_file(str(lake), prompts, 2, out, None, 1)
    lines = read_results(out / "results.jsonl")
    assert len(lines) == 4  # two drawable prompts x 2 images; the giraffe is skipped, not guessed
    assert sorted({x.tag for x in lines}) == ["colors", "counting"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["00000", "00002"]
    by_tag = {r["tag"]: r["value"] for r in rows}
    assert by_tag["colors"] == sum(x.correct for x in lines if x.tag == "colors") / 2
    stored = registry.get_lake(str(lake)).read("evaluations").to_pylist()
    assert {r["benchmark"] for r in stored} >= {"geneval-p"}
