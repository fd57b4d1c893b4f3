"""Pipeline commands: `illume demo`, `train`, `round`, `rerun`, `eval`, `report`.

Each runs a Prefect flow in this process (a temporary local Prefect API unless PREFECT_API_URL
points at a server) over Ray workers (local unless RAY_ADDRESS points at a cluster).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer


def local_lake(value: Path) -> Path:
    """Refuse a lake URI: a path option would turn `s3://b/p` into a local folder named `s3:`."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/", str(value)):
        raise typer.BadParameter(
            f"{value} looks like a URI; the commands take a local lake folder. For object storage, "
            "mount the bucket (s3fs, gcsfuse) and pass the mount point"
        )
    return value


LAKE = typer.Option(Path("lake"), "--lake", help="lake root: a local folder", callback=local_lake)


def _print_scores(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table("benchmark", "split", "tag", "metric", "value", "n")
    for r in sorted(rows, key=lambda r: (r["benchmark"], r["split"], r["tag"] != "overall", r["tag"])):
        t.add_row(r["benchmark"], r["split"], r["tag"], r["metric"], f"{r['value']:.3f}", str(r["n"]))
    Console().print(t)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `illume` app."""

    @app.command()
    def demo(
        lake: Path = LAKE,
        budget: str = typer.Option("demo", help="step budget: smoke (seconds), demo (minutes), experiment"),
        seed: int = typer.Option(0, help="seed of the corpus and the training runs"),
        workers: int = typer.Option(2, help="Ray model workers for sampling and assessment"),
    ) -> None:
        """Everything on the embedded default: data, tokenizers, stages 0-3, one round, evaluation, report."""
        from flows.pipeline import self_enhancement_round, train_pipeline
        from flows.report import build_report
        from storage.catalog import catalog_path
        from storage.lake import Lake

        base = train_pipeline(lake=str(lake), preset="tiny", budget=budget, seed=seed, workers=workers)
        typer.echo(f"base model: {base['checkpoint']} (ShapesEval overall {base['shapeseval_overall']})")
        r = self_enhancement_round(lake=str(lake), seed=seed, workers=workers)
        typer.echo(f"round {r['round']}: {r['status']} ({r['reason']})")
        index = build_report(str(lake))
        typer.echo(f"report:  {index.resolve()}  (open in a browser: {index.resolve().as_uri()})")
        typer.echo(
            f'catalog: {catalog_path(Lake(lake)).resolve()}  (try: illume sql "SELECT * FROM round_scores" --lake {lake}'
            f"\n         or the DuckDB CLI: duckdb -readonly {lake}/catalog.duckdb -cmd \"SET file_search_path = '{lake}'\")"
        )

    @app.command()
    def train(
        lake: Path = LAKE,
        preset: str = typer.Option("tiny", help="model preset (see `illume presets`)"),
        budget: str = typer.Option("demo", help="step budget: smoke, demo, experiment"),
        seed: int = typer.Option(0),
        workers: int = typer.Option(2),
        rerun: list[str] = typer.Option([], help="task names to refresh (repeatable)"),
    ) -> None:
        """Train the base model through all stages; it becomes round 0 and the current checkpoint."""
        from flows.pipeline import train_pipeline

        out = train_pipeline(
            lake=str(lake), preset=preset, budget=budget, seed=seed, workers=workers, rerun=rerun
        )
        typer.echo(json.dumps(out, indent=2, default=str))

    @app.command(name="round")
    def round_(
        lake: Path = LAKE,
        n_prompts: int = typer.Option(48, help="prompts drawn from the base text-to-image prompts"),
        images_per_prompt: int = typer.Option(4),
        strategy: list[str] = typer.Option(
            ["assessment", "accepted_t2i"], help="reformat strategies (repeatable)"
        ),
        assessor: str = typer.Option("self", help="self (the model) or judge (external teacher)"),
        margin: float = typer.Option(0.02, help="largest ShapesEval drop still promoted"),
        min_parse_rate: float = typer.Option(0.5, help="smallest assessment parse rate still promoted"),
        seed: int = typer.Option(0),
        workers: int = typer.Option(2),
        rerun: list[str] = typer.Option([], help="task names to refresh (repeatable)"),
    ) -> None:
        """The next self-enhancement round from the current checkpoint (finishes an interrupted one first)."""
        from flows.pipeline import self_enhancement_round

        out = self_enhancement_round(
            lake=str(lake),
            n_prompts=n_prompts,
            images_per_prompt=images_per_prompt,
            strategies=strategy,
            assessor=assessor,
            margin=margin,
            min_parse_rate=min_parse_rate,
            seed=seed,
            workers=workers,
            rerun=rerun,
        )
        typer.echo(f"round {out['round']}: {out['status']} ({out['reason']})")

    @app.command()
    def rerun(
        round: int = typer.Option(..., "--round", help="the round to re-run"),
        task: list[str] = typer.Option(..., "--task", help="task to refresh; what depends on it follows"),
        lake: Path = LAKE,
        workers: int = typer.Option(2),
    ) -> None:
        """Re-run one task of a round (and everything downstream of its output); the rest is cached."""
        from flows.pipeline import self_enhancement_round
        from tasks.steps import get_lake

        rows = get_lake(str(lake)).read("rounds", round).to_pylist()
        if not rows or round == 0:
            raise typer.BadParameter(
                f'no self-enhancement round {round} in {lake}; see `illume sql "SELECT * FROM rounds"`'
            )
        params = json.loads(rows[0]["params"])
        keep = {
            k: params[k]
            for k in (
                "n_prompts",
                "images_per_prompt",
                "strategies",
                "assessor",
                "margin",
                "min_parse_rate",
                "finetune_steps",
                "seed",
            )
            if k in params
        }
        out = self_enhancement_round(lake=str(lake), round=round, workers=workers, rerun=task, **keep)
        typer.echo(f"round {out['round']}: {out['status']} ({out['reason']})")

    @app.command(name="eval")
    def eval_(
        lake: Path = LAKE,
        checkpoint: Path | None = typer.Option(None, help="checkpoint folder (default: the current one)"),
        prompts: Path | None = typer.Option(
            None, help="any GenEval-format prompt file (default: ShapesEval)"
        ),
        images_per_prompt: int = typer.Option(4),
        outdir: Path | None = typer.Option(
            None, help="where to write GenEval's image layout (with --prompts)"
        ),
        workers: int = typer.Option(2),
    ) -> None:
        """Evaluate a checkpoint: ShapesEval, VQA, agreement; or any GenEval prompt file with --prompts."""
        if prompts is None:
            from flows.pipeline import evaluate_checkpoint

            out = evaluate_checkpoint(
                lake=str(lake), checkpoint=str(checkpoint) if checkpoint else None, workers=workers
            )
            _print_scores(out["rows"])
            return
        from flows.geneval_eval import evaluate_prompt_file

        rows = evaluate_prompt_file(
            str(lake), prompts, images_per_prompt, outdir, str(checkpoint) if checkpoint else None, workers
        )
        _print_scores(rows)

    @app.command()
    def report(lake: Path = LAKE) -> None:
        """Write an HTML report (scores per round and tag, agreement, sample grids) into <lake>/reports."""
        from flows.report import build_report

        typer.echo(f"report: {build_report(str(lake)).resolve()}")
