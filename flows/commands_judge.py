"""Judge commands: `illume judge` (score a GenEval image folder) and `illume scores` (its summary).

Both read and write GenEval's own files (image folder in, results jsonl out), so results from
the real GenEval evaluator can be summarised here too.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def judge_command(
    folder: Path = typer.Argument(
        ..., help="GenEval image folder: <dir>/<00000>/metadata.jsonl, samples/*.png"
    ),
    outfile: Path = typer.Option(
        None, "--outfile", "-o", help="results jsonl (default: <folder>/results.jsonl)"
    ),
) -> None:
    """Judge every image of a GenEval image folder and write GenEval's results jsonl."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from illume_core.judge import judge_folder, summarize, write_results

    console = Console()
    if not folder.is_dir():
        raise typer.BadParameter(
            f"{folder} is not a folder; pass a GenEval image folder", param_hint="FOLDER"
        )
    out = outfile or folder / "results.jsonl"
    with Progress(
        TextColumn("judging"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("judge", total=None)
        report = judge_folder(
            folder, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    write_results(out, report.results)
    _print_scores(console, summarize(report.results))
    console.print(
        f"judged {len(report.results)} image(s), skipped {len(report.skipped)} item(s); results in {out}",
        soft_wrap=True,
    )
    for s in report.skipped:
        console.print(f"  skipped {s}", markup=False, highlight=False, soft_wrap=True)


def scores_command(
    results: Path = typer.Argument(..., help="a results jsonl written by `illume judge` or GenEval"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Print GenEval's summary of a results file: accuracy per tag and the overall score."""
    from rich.console import Console

    from illume_core.judge import read_results, summarize

    if not results.is_file():
        raise typer.BadParameter(f"{results} does not exist; run `illume judge` first", param_hint="RESULTS")
    try:
        summary = summarize(read_results(results))
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="RESULTS") from None
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        _print_scores(Console(), summary)


def _print_scores(console, summary) -> None:
    from rich.table import Table

    t = Table("tag", "score", "correct / images", title="GenEval scores")
    for tag, v in summary.per_tag.items():
        t.add_row(tag, f"{v:.2%}", f"{summary.n_correct[tag]} / {summary.n[tag]}")
    t.add_row(
        "overall (mean over tags)", f"{summary.overall:.5f}", str(sum(summary.n.values())), style="bold"
    )
    console.print(t)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `illume` app."""
    app.command("judge")(judge_command)
    app.command("scores")(scores_command)
