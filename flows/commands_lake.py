"""Lake commands: `illume sql` runs read-only SQL against the lake's DuckDB catalog."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `illume` app."""

    @app.command()
    def sql(
        statement: str = typer.Argument(..., help='read-only SQL, e.g. "SELECT * FROM round_scores"'),
        lake: str = typer.Option("lake", "--lake", help="lake root: a folder, or s3://bucket/prefix"),
        as_json: bool = typer.Option(False, "--json", help="print rows as JSON lines"),
        as_csv: bool = typer.Option(False, "--csv", help="print rows as CSV"),
    ) -> None:
        """Query the lake's catalog (tables and analyst views) read-only; see docs/QUERIES.md."""
        import sys

        import duckdb
        import pyarrow.csv as pacsv

        from storage.catalog import CatalogQueryError, query
        from storage.lake import Lake, LakeWriteError
        from storage.objstore import LakeURIError, scheme_of

        if as_json and as_csv:
            raise typer.BadParameter("Can't use both --json and --csv. Choose one.")
        if scheme_of(lake) is None and not Path(lake).is_dir():
            raise typer.BadParameter(f"no lake at {lake}; pass --lake DIR pointing at a lake root")
        try:
            store = Lake(lake)
        except (LakeURIError, LakeWriteError) as e:
            raise typer.BadParameter(str(e)) from None
        try:
            result = query(store, statement)
        except CatalogQueryError as e:
            typer.echo(f"refused: {e}", err=True)
            raise typer.Exit(2) from None
        except duckdb.Error as e:
            # a read that DuckDB could not run (no such table or column, a type error)
            typer.echo(
                f'query failed: {e}\nList the tables and views with: illume sql "SHOW TABLES" --lake {lake}',
                err=True,
            )
            raise typer.Exit(1) from None
        if as_csv:
            pacsv.write_csv(result, sys.stdout.buffer)
            return
        rows = result.to_pylist()
        if as_json:
            for r in rows:
                typer.echo(json.dumps(r, default=str))
            return
        from rich.console import Console
        from rich.table import Table

        t = Table(*result.column_names)
        for r in rows:
            t.add_row(*("NULL" if v is None else _short(v) for v in r.values()))
        Console().print(t)
        Console(stderr=True).print(f"{len(rows)} rows")


def _short(value: object, width: int = 80) -> str:
    """A cell for the terminal: PNG bytes and long JSON cut to one readable line."""
    text = f"<{len(value)} bytes>" if isinstance(value, bytes) else str(value)
    return text if len(text) <= width else text[: width - 3] + "..."
