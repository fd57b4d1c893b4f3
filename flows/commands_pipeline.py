"""Pipeline commands: `illume demo`, `train`, `round`, `rerun`, `eval`, `report`.

Each runs a Prefect flow in this process (a temporary local Prefect API unless PREFECT_API_URL
points at a server) over Ray workers (local unless RAY_ADDRESS points at a cluster).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from illume_core.settings import RoundConfig


def lake_root(value: str) -> str:
    """A lake root as the user wrote it: a local folder, file:///abs/path or s3://bucket/prefix.

    The option is read as text, never as a path: a path option would turn `s3://b/p` into
    `s3:/b/p`, a local folder named `s3:`. Any other URI (gs://, az://, `s3:/b/p` with one slash,
    ...) is refused with a clear message (storage/objstore.py), never rewritten into a folder."""
    from storage.blobs import normalize
    from storage.objstore import LakeURIError

    try:
        return normalize(value)  # file:///x -> /x, S3:// -> s3://
    except LakeURIError as e:
        raise typer.BadParameter(str(e)) from None


def _report_line(lake: str, index: Path) -> str:
    """Where the report is: its file, and for a bucket lake where it was uploaded."""
    from storage import blobs

    line = f"report:  {index.resolve()}  (open in a browser: {index.resolve().as_uri()})"
    if blobs.remote(lake):
        line += f"\n         uploaded to {blobs.uri(lake, 'reports/index.html')}"
    return line


LAKE = typer.Option(
    "lake", "--lake", help="lake root: a local folder or s3://bucket/prefix", callback=lake_root
)


def _margins(text: str) -> dict[str, float]:
    """--likelihood-margins 'object=0,count=-3' -> {dimension: nats}; a bad one is a usage error."""
    from illume_core.self_enhance.options import LikelihoodMargins

    try:
        return LikelihoodMargins.parse(text).model_dump(exclude_defaults=True) if text else {}
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--likelihood-margins") from None


def _round_config(**knobs) -> RoundConfig:
    """`illume round`'s options as one RoundConfig; a bad value is a usage error naming its option,
    before any work (Ray and the Prefect API are not started)."""
    from pydantic import ValidationError

    from illume_core.settings import RoundConfig

    try:
        return RoundConfig(**knobs)
    except ValidationError as e:
        bad = [(_round_option(str(err["loc"][0])), err["msg"]) for err in e.errors()]
        if len(bad) == 1:
            raise typer.BadParameter(bad[0][1], param_hint=bad[0][0]) from None
        raise typer.BadParameter("; ".join(f"{option}: {msg}" for option, msg in bad)) from None


def _round_option(field: str) -> str:
    """The `illume round` option of a RoundConfig field."""
    return "--strategy" if field == "strategies" else "--" + field.replace("_", "-")


def warm_up() -> None:
    """Start the temporary Prefect API, Ray and the flow's imports side by side, not one after the other.

    The API server is a subprocess that takes seconds to answer (`flows/temp_api.py` starts it
    without importing Prefect's server here); Ray's local instance takes seconds too, and so do
    the imports of the flow modules and of the model's (torch, transformers: its first task
    needs them). The API starts first; the imports run in a thread while this thread starts Ray
    (Ray's init stays in the main thread, and mostly waits for its own processes); the API is
    waited for last, just before the flow's first call. Without a temporary API (a server named in PREFECT_API_URL, or Prefect
    already imported) only Ray and the imports are done here. See benchmarks/startup.py and
    docs/PIPELINE.md for the figures.
    """
    import os
    import threading

    if os.environ.get("ILLUME_NO_WARM_UP"):  # benchmarks/startup.py measures without it
        return
    from flows.temp_api import start_temporary_api

    api = start_temporary_api()

    def imports() -> None:
        try:
            import flows.pipeline  # noqa: F401
            import illume_core.eval.evaluations  # noqa: F401  (torch, transformers: the tasks' imports)
        except BaseException:  # the command's own import meets the error and reports it
            pass

    t = threading.Thread(target=imports, name="illume-imports", daemon=True)
    t.start()
    from tasks.cluster import ensure_ray

    ensure_ray()
    t.join()
    if api is not None:
        api.wait()


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
        lake: str = LAKE,
        budget: str = typer.Option("demo", help="step budget: smoke (seconds), demo (minutes), experiment"),
        seed: int = typer.Option(0, help="seed of the corpus and the training runs"),
        workers: int = typer.Option(2, help="Ray model workers for sampling and assessment"),
    ) -> None:
        """Everything on the embedded default: data, tokenizers, stages 0-3, one round, evaluation, report."""
        warm_up()
        from flows.pipeline import self_enhancement_round, train_pipeline
        from flows.report import build_report
        from illume_core.settings import RoundConfig
        from storage.catalog import catalog_path
        from storage.lake import Lake

        base = train_pipeline(lake=str(lake), preset="tiny", budget=budget, seed=seed, workers=workers)
        overall = base["shapeseval_overall"]
        score = "not measured" if overall is None else f"{overall:.3f}"
        typer.echo(f"base model: {base['checkpoint']} (ShapesEval overall {score})")
        r = self_enhancement_round(lake=str(lake), config=RoundConfig(seed=seed), workers=workers)
        typer.echo(f"round {r['round']}: {r['status']} ({r['reason']})")
        typer.echo(_report_line(lake, build_report(str(lake))))
        cli = (
            f"\n         or the DuckDB CLI: duckdb -readonly {lake}/catalog.duckdb -cmd \"SET file_search_path = '{lake}'\""
            if "://" not in lake
            else ""
        )
        typer.echo(
            f'catalog: {catalog_path(Lake(lake)).resolve()}  (try: illume sql "SELECT * FROM round_scores" --lake {lake}{cli})'
        )

    @app.command()
    def train(
        lake: str = LAKE,
        preset: str = typer.Option("tiny", help="model preset (see `illume presets`)"),
        budget: str = typer.Option("demo", help="step budget: smoke, demo, experiment"),
        seed: int = typer.Option(0),
        workers: int = typer.Option(2),
        rerun: list[str] = typer.Option([], help="task names to refresh (repeatable)"),
        vision_from: str = typer.Option(
            None,
            help="reuse the vision encoder and tokenizer of this checkpoint folder or lake "
            "(same preset) instead of training them: seeds of one experiment share one vision run",
        ),
    ) -> None:
        """Train the base model through all stages; it becomes round 0 and the current checkpoint."""
        warm_up()
        from flows.pipeline import train_pipeline

        out = train_pipeline(
            lake=str(lake),
            preset=preset,
            budget=budget,
            seed=seed,
            workers=workers,
            rerun=rerun,
            vision_from=vision_from,
        )
        typer.echo(json.dumps(out, indent=2, default=str))

    @app.command(name="round")
    def round_(
        lake: str = LAKE,
        n_prompts: int = typer.Option(48, help="prompts drawn, tag-balanced, from --prompts' source"),
        prompts: str = typer.Option(
            "corpus",
            help="corpus (the base text-to-image prompts, ILLUME's) or novel (compositions the base "
            "corpus holds out, never a ShapesEval prompt: no ground truth for them anywhere)",
        ),
        images_per_prompt: int = typer.Option(4),
        strategy: list[str] = typer.Option(
            ["assessment", "accepted_t2i"], help="reformat strategies (repeatable)"
        ),
        assessor: str = typer.Option(
            "self",
            help="self (the model answers about the image), likelihood (the model's likelihood of its "
            "drawing against one-dimension counterfactual prompts) or judge (external teacher)",
        ),
        likelihood_margins: str = typer.Option(
            "",
            help="the likelihood assessor's margins in nats, e.g. 'object=0,count=-3' (dimensions "
            "not named keep their defaults; docs/PIPELINE.md)",
        ),
        margin: float = typer.Option(0.02, help="largest ShapesEval drop still promoted"),
        min_parse_rate: float = typer.Option(0.5, help="smallest assessment parse rate still promoted"),
        finetune_lr_scale: float | None = typer.Option(
            None,
            help="the fine-tuning lr as a multiple of the stage-3 recipe's (default: FINETUNE_LR_SCALE in "
            "illume_core/settings.py; docs/RESULTS.md)",
        ),
        seed: int = typer.Option(0),
        workers: int = typer.Option(2),
        rerun: list[str] = typer.Option([], help="task names to refresh (repeatable)"),
    ) -> None:
        """The next self-enhancement round from the current checkpoint (finishes an interrupted one first)."""
        config = _round_config(
            n_prompts=n_prompts,
            prompts=prompts,
            images_per_prompt=images_per_prompt,
            **({"strategies": strategy} if strategy else {}),
            assessor=assessor,
            likelihood_margins=_margins(likelihood_margins),
            margin=margin,
            min_parse_rate=min_parse_rate,
            **({"finetune_lr_scale": finetune_lr_scale} if finetune_lr_scale is not None else {}),
            seed=seed,
        )
        warm_up()
        from flows.pipeline import self_enhancement_round

        out = self_enhancement_round(lake=str(lake), config=config, workers=workers, rerun=rerun)
        typer.echo(f"round {out['round']}: {out['status']} ({out['reason']})")

    @app.command()
    def rerun(
        round: int = typer.Option(..., "--round", help="the round to re-run"),
        task: list[str] = typer.Option(..., "--task", help="task to refresh; what depends on it follows"),
        lake: str = LAKE,
        workers: int = typer.Option(2),
    ) -> None:
        """Re-run one task of a round (and everything downstream of its output); the rest is cached."""
        from illume_core.settings import RoundConfig
        from storage.registry import get_lake

        rows = get_lake(str(lake)).read("rounds", round).to_pylist()
        if not rows or round == 0:
            raise typer.BadParameter(
                f'no self-enhancement round {round} in {lake}; see `illume sql "SELECT * FROM rounds"`'
            )
        cfg = RoundConfig.from_params(rows[0]["params"])  # the knobs the round ran with
        warm_up()
        from flows.pipeline import self_enhancement_round

        out = self_enhancement_round(lake=str(lake), round=round, config=cfg, workers=workers, rerun=task)
        typer.echo(f"round {out['round']}: {out['status']} ({out['reason']})")

    @app.command(name="eval")
    def eval_(
        lake: str = LAKE,
        checkpoint: str | None = typer.Option(
            None, help="checkpoint folder or s3:// URI (default: the current one)"
        ),
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
            warm_up()
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
    def calibrate(
        lake: str = LAKE,
        checkpoint: str | None = typer.Option(
            None, help="checkpoint folder or s3:// URI (default: the current one)"
        ),
        workers: int = typer.Option(2),
    ) -> None:
        """Choose the lake's sampling setting again on tuning images (never ShapesEval's): every
        candidate drawn and judged, the best kept for every later drawing in the lake."""
        warm_up()
        from flows.pipeline import choose_sampling
        from illume_core.model.sampling import SamplingParams

        out = choose_sampling(
            lake=str(lake), checkpoint=str(checkpoint) if checkpoint else None, workers=workers
        )
        setting = SamplingParams.model_validate_json(out["sampling"]).setting
        typer.echo(f"sampling setting of {lake}: {setting} (cfg:temperature:top_k:top_p, m: mask nucleus)")
        typer.echo(
            f"every candidate: illume sql \"SELECT * FROM sampling_trials WHERE tag = 'overall'\" --lake {lake}"
        )

    @app.command()
    def report(lake: str = LAKE) -> None:
        """Write an HTML report (scores per round and tag, agreement, sample grids) into <lake>/reports."""
        from flows.report import build_report

        typer.echo(_report_line(lake, build_report(str(lake))))
