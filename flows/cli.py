"""The `illume` command line: one typer app; each area registers its commands from its own module.

Heavy imports (torch, prefect, ray) happen inside the commands, so `illume --help` stays fast.
"""

from __future__ import annotations

import importlib
import os

import typer

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

app = typer.Typer(
    help="illume: self-improving unified multimodal models (ILLUME) on ShapesWorld.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# each module defines `register(app)`; the order is the order of `illume --help`
COMMAND_MODULES = [
    "flows.commands_world",
    "flows.commands_judge",
    "flows.commands_lake",
    "flows.commands_model",
    "flows.commands_pipeline",
]


@app.callback()
def _root() -> None:
    """illume: self-improving unified multimodal models (ILLUME) on ShapesWorld."""


@app.command()
def presets() -> None:
    """List the model presets (the registry the flows and tests read)."""
    from rich.console import Console
    from rich.table import Table

    from illume_core.model.config import PRESETS

    t = Table("preset", "image", "tokens/image", "codebook", "LLM width x layers", "text vocab")
    for name, c in PRESETS.items():
        t.add_row(
            name,
            f"{c.image_size}px",
            str(c.image_tokens),
            str(c.codebook_size),
            f"{c.hidden_size} x {c.num_layers}",
            str(c.text_vocab_size),
        )
    Console().print(t)


def _register() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
