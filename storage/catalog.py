"""The DuckDB catalog: `<lake>/catalog.duckdb`, a file of views over the lake's live Parquet files.

Each table's view reads exactly the files its manifest lists (absolute paths, hive partitioning,
union by name), so a reader sees a committed file set. The file is rebuilt into a temporary file
and swapped in with os.replace: readers holding the old file open keep reading it, with no lock
error. Analyst views (round_scores, assessment_agreement, sample_lineage) sit on top.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from storage.schemas import DIMENSIONS

if TYPE_CHECKING:
    from storage.lake import Lake

CATALOG_NAME = "catalog.duckdb"
READ_STATEMENTS = {"SELECT", "EXPLAIN"}  # everything else (ATTACH, COPY, SET, CREATE, ...) is refused


class CatalogQueryError(ValueError):
    """A query the read-only catalog refuses (anything that is not a read)."""


def catalog_path(lake: Lake) -> Path:
    return Path(lake.root) / CATALOG_NAME


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


ROUND_SCORES = """
CREATE VIEW round_scores AS
WITH per_tag AS (
    SELECT round, checkpoint_id, split, tag, avg(value) AS value, CAST(sum(n) AS BIGINT) AS n
    FROM evaluations
    WHERE benchmark = 'shapeseval' AND metric = 'accuracy' AND tag <> 'overall'
    GROUP BY round, checkpoint_id, split, tag
)
SELECT round, checkpoint_id, split, tag, value, n FROM per_tag
UNION ALL
-- overall: the unweighted mean of the tags, as GenEval reports it
SELECT round, checkpoint_id, split, 'overall' AS tag, avg(value) AS value, CAST(sum(n) AS BIGINT) AS n
FROM per_tag GROUP BY round, checkpoint_id, split
"""

# one JSON parse per judgment (json_transform to a struct), not one json_extract per dimension
_TRUTH_TYPE = '{"dimensions": {' + ", ".join(f'"{d}": "BOOLEAN"' for d in DIMENSIONS) + "}}"
_PER_DIM = "\n    UNION ALL ".join(
    f"SELECT round, '{d}' AS dimension, {d}_verdict = 'yes' AS said_yes, truth.{d} AS truth FROM pairs"
    for d in DIMENSIONS
)
ASSESSMENT_AGREEMENT = f"""
CREATE VIEW assessment_agreement AS
WITH pairs AS (
    SELECT a.round, {", ".join(f"a.{d}_verdict" for d in DIMENSIONS)},
           TRY(json_transform(j.details, '{_TRUTH_TYPE}')).dimensions AS truth
    FROM assessments a
    JOIN judgments j USING (round, checkpoint_id, prompt_id, sample_index)
    WHERE a.assessor = 'self'
),
per_dim AS (
    {_PER_DIM}
)
SELECT round, dimension,
       count(*) AS n,
       avg(CAST(said_yes = truth AS DOUBLE)) AS accuracy,
       count(*) FILTER (WHERE said_yes AND truth) AS tp,
       count(*) FILTER (WHERE said_yes AND NOT truth) AS fp,
       count(*) FILTER (WHERE NOT said_yes AND NOT truth) AS tn,
       count(*) FILTER (WHERE NOT said_yes AND truth) AS fn
FROM per_dim WHERE said_yes IS NOT NULL AND truth IS NOT NULL
GROUP BY round, dimension
"""

SAMPLE_LINEAGE = """
CREATE VIEW sample_lineage AS
SELECT e.example_id, e.strategy, e.round AS sft_round,
       r.candidate_checkpoint AS trained_checkpoint,
       s.sample_key, s.round AS sample_round, s.checkpoint_id AS sampled_by_checkpoint,
       s.prompt_id, s.sample_index, s.seed,
       c.parent AS sampler_parent, c.stage AS sampler_stage, r.status AS round_status
FROM sft_examples e
LEFT JOIN samples s ON s.sample_key = e.source_sample
LEFT JOIN checkpoints c ON c.checkpoint_id = s.checkpoint_id
LEFT JOIN rounds r ON r.round = e.round
"""

ANALYST_VIEWS = {
    "round_scores": ROUND_SCORES,
    "assessment_agreement": ASSESSMENT_AGREEMENT,
    "sample_lineage": SAMPLE_LINEAGE,
}


def build_catalog(lake: Lake) -> Path:
    """Rebuild `<lake>/catalog.duckdb` from the manifests into a temp file, then swap it in."""
    final = catalog_path(lake)
    tmp = final.with_name(f".{CATALOG_NAME}.{uuid.uuid4().hex}.tmp")
    try:
        con = duckdb.connect(str(tmp))
        try:
            con.execute("CREATE SCHEMA _lake")
            con.execute("CREATE TABLE _lake.state (table_name VARCHAR, manifest_version BIGINT)")
            for name, tdef in lake.tables.items():
                manifest = lake.manifest(name)
                con.execute("INSERT INTO _lake.state VALUES (?, ?)", [name, manifest["version"]])
                # an empty typed table gives the view every current column even before (or
                # without) a file that has it: new nullable columns read as NULL in old files
                empty = tdef.schema.empty_table().append_column("part", pa.array([], pa.string()))
                con.register("_arrow_empty", empty)
                con.execute(f'CREATE TABLE _lake."empty_{name}" AS SELECT * FROM _arrow_empty')
                con.unregister("_arrow_empty")
                files = lake.files(name)
                body = f'SELECT * FROM _lake."empty_{name}"'
                if files:
                    paths = ", ".join(_sql_str(p) for p in files)
                    body += (
                        f" UNION ALL BY NAME SELECT * FROM read_parquet([{paths}], hive_partitioning = true,"
                        " union_by_name = true, hive_types = {'part': 'VARCHAR'})"
                    )
                con.execute(f'CREATE VIEW "{name}" AS {body}')
            for sql in ANALYST_VIEWS.values():
                con.execute(sql)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, final)  # atomic: a reader opens the old catalog or the new one
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
    return final


def catalog_is_current(lake: Lake) -> bool:
    """Whether the catalog file reflects every table's current manifest version."""
    path = catalog_path(lake)
    if not path.exists():
        return False
    try:
        with connect_readonly(lake) as con:
            built = dict(con.execute("SELECT table_name, manifest_version FROM _lake.state").fetchall())
    except duckdb.Error:
        return False
    return built == {name: lake.manifest(name)["version"] for name in lake.tables}


def connect_readonly(lake: Lake) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the current catalog (built first if the lake has none yet).

    The file is ATTACHed to a fresh in-memory database rather than opened with
    `duckdb.connect(path)`: DuckDB caches databases by path within a process, which would hand
    a later reader the catalog it opened before the last swap.
    """
    path = catalog_path(lake)
    if not path.exists():
        build_catalog(lake)
    con = duckdb.connect()
    con.execute(f"ATTACH {_sql_str(str(path))} AS catalog (READ_ONLY)")
    con.execute("USE catalog")
    return con


def check_read_only(sql: str) -> None:
    """Raise CatalogQueryError unless every statement in `sql` is a SELECT (or EXPLAIN of one)."""
    try:
        statements = duckdb.connect().extract_statements(sql)
    except duckdb.Error as e:
        raise CatalogQueryError(f"could not parse the query: {e}") from None
    if not statements:
        raise CatalogQueryError("the query is empty; pass a SELECT statement")
    for st in statements:
        kind = st.type.name
        if kind not in READ_STATEMENTS:
            raise CatalogQueryError(
                f"{kind} statements are refused: the catalog is read-only (only SELECT, WITH, FROM, "
                "DESCRIBE, SHOW, SUMMARIZE and EXPLAIN). Write through storage.Lake instead."
            )


def query(lake: Lake, sql: str) -> pa.Table:
    """Run read-only SQL against the catalog and return the last statement's result."""
    check_read_only(sql)
    con = connect_readonly(lake)
    try:
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()
