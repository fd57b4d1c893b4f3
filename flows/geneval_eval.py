"""`illume eval --prompts FILE.jsonl`: any GenEval-format prompt file, end to end.

Samples each in-vocabulary prompt with a checkpoint, writes GenEval's image layout
(`<outdir>/<00000>/metadata.jsonl`, `samples/0000.png`), judges that folder exactly as
`illume judge` would, prints and records the scores in the lake's `evaluations` table.
Lines naming classes ShapesWorld cannot draw are reported and skipped, never guessed.
"""

from __future__ import annotations

import re
from pathlib import Path

import typer

from illume_core.world.geneval import MetadataError, iter_metadata


def evaluate_prompt_file(
    lake: str,
    prompts: Path,
    images_per_prompt: int,
    outdir: Path | None,
    checkpoint: str | None,
    workers: int,
) -> list[dict]:
    from illume_core.eval.evaluations import evaluation_rows, sample_items, tag_scores
    from illume_core.judge import judge_folder, write_results
    from illume_core.model.images import from_png
    from storage.registry import checkpoint_id_of, current_checkpoint, get_lake
    from tasks.plumbing import lake_sampling
    from tasks.pool import get_pool

    ck = checkpoint or current_checkpoint(lake)
    if ck is None:
        raise typer.BadParameter(f"no current checkpoint in {lake}; pass --checkpoint or run `illume train`")
    if not prompts.is_file():
        raise typer.BadParameter(f"{prompts} does not exist; pass a GenEval metadata .jsonl file")
    from storage import blobs

    # GenEval's layout is read by its own tools from a folder: for a bucket lake the default
    # folder is on this machine (<node cache>/lakes/<digest>/geneval/...), and its files are uploaded
    # to <lake>/geneval/<name>/ after judging
    outdir = outdir or blobs.local_dir(lake, f"geneval/{prompts.stem}")
    lines, skipped = [], 0
    for n, m in iter_metadata(prompts):
        if isinstance(m, MetadataError):
            typer.echo(f"skipped {m}", err=True)
            skipped += 1
            continue
        if bad := m.out_of_vocabulary():
            typer.echo(f"skipped {prompts}:{n}: out of ShapesWorld's vocabulary ({', '.join(bad)})", err=True)
            skipped += 1
            continue
        lines.append((n - 1, m))
    if not lines:
        raise typer.BadParameter(f"no prompt of {prompts} can be drawn in ShapesWorld ({skipped} skipped)")
    items = []
    for idx, m in lines:
        for it in sample_items([m], images_per_prompt, round=0):
            items.append({**it, "folder": f"{idx:05d}", "meta": m.dumps()})
    params = lake_sampling(lake)  # the lake's setting, as every drawing of the pipeline
    rows = get_pool(ck, workers).map("sample", items, key=lambda it: it["folder"], kwargs={"params": params})
    for r in rows:
        d = outdir / r["folder"]
        (d / "samples").mkdir(parents=True, exist_ok=True)
        (d / "metadata.jsonl").write_text(r["meta"] + "\n", encoding="utf-8")
        from_png(r["png"]).save(d / "samples" / f"{r['sample_index']:04d}.png")
    report = judge_folder(outdir)
    write_results(outdir / "results.jsonl", report.results)
    scores = tag_scores([{"tag": r.tag, "correct": r.correct} for r in report.results])
    ck_id = checkpoint_id_of(ck)
    bench = "geneval-" + re.sub(r"[^A-Za-z0-9_.-]", "_", prompts.stem)
    out = evaluation_rows(0, ck_id, bench, "all", "accuracy", scores)
    lk = get_lake(lake)
    with lk.writer(owner="illume-eval"):
        lk.write_partition(
            "evaluations", 0, out, producer="illume-eval", checkpoint=ck_id, part=f"{bench}-{ck_id}"
        )
    where = str(outdir)
    if blobs.remote(lake):
        where += f", uploaded to {blobs.upload_folder(lake, outdir, f'geneval/{prompts.stem}')}"
    typer.echo(f"images and results in {where} ({skipped} prompt lines skipped)")
    return out
