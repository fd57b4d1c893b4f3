"""World commands: `illume prompts` and `illume render` (ShapesWorld prompt files and renders)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `illume` app."""
