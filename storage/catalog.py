"""The DuckDB catalog: `<lake>/catalog.duckdb`, a file of views over the lake's live Parquet files.

Each table's view reads exactly the files its manifest lists (paths relative to the lake root,
hive partitioning, union by name), so a reader sees a committed file set, and a lake copied,
restored or mounted elsewhere reads its own files: a reader sets DuckDB's `file_search_path` to
the lake root (`connect_readonly` does; from the CLI: `SET file_search_path = '<lake>'`, or start
it inside the lake folder). The file is written in DuckDB storage format `STORAGE_VERSION`, which
DuckDB 1.x clients (from 1.0) and 2.x both open. It is rebuilt into a temporary file and swapped
in with os.replace: readers holding the old file open keep reading it, with no lock error.
Analyst views (round_scores, assessment_agreement, sample_lineage) read figures computed once per
build into `_lake` tables (copied from the previous build when their inputs are unchanged).
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from storage.schemas import DIMENSIONS

if TYPE_CHECKING:
    from storage.lake import Lake

CATALOG_NAME = "catalog.duckdb"
# The storage format the catalog is written in. DuckDB 2.0 writes its newest format by default
# (storage version number 69), which DuckDB 1.5 refuses ("can only read versions between 64 and
# 68"); 'v1.0.0' is the oldest format 2.0 writes, and every DuckDB from 1.0 on reads it.
# tests/test_storage_catalog.py opens a built catalog with the DuckDB 1.5 CLI (pip `duckdb-cli`).
STORAGE_VERSION = "v1.0.0"
# How the views name files; a catalog with another layout (or none: built before layouts were
# recorded, with absolute paths) is not current and is rebuilt by the next writer.
LAYOUT = "relative-v1"
READ_STATEMENTS = {"SELECT", "EXPLAIN"}  # everything else (ATTACH, COPY, SET, CREATE, ...) is refused
# what precedes the explained statement: comments, EXPLAIN, its options, ANALYZE
_EXPLAIN_PREFIX = re.compile(
    r"^(?:\s|--[^\n]*|/\*.*?\*/)*EXPLAIN(?:\s|--[^\n]*|/\*.*?\*/)*(?:\([^)]*\))?"
    r"(?:\s|--[^\n]*|/\*.*?\*/)*(?:ANALY[SZ]E\b)?",
    re.IGNORECASE | re.DOTALL,
)


class CatalogQueryError(ValueError):
    """A query the read-only catalog refuses (anything that is not a read)."""


CACHE_ENV = "ILLUME_CATALOG_CACHE"  # where object-store lakes keep their per-machine catalogs


def catalog_path(lake: Lake) -> Path:
    """<lake>/catalog.duckdb for a local lake; for an object-store lake, a file of this machine's
    cache (`$ILLUME_CATALOG_CACHE`, default ~/.cache/illume/catalogs/<digest of the URI>/)."""
    if lake.local:
        return Path(lake.root) / CATALOG_NAME
    base = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "illume" / "catalogs")
    return base / hashlib.sha256(lake.uri.encode()).hexdigest()[:16] / CATALOG_NAME


def _register_fs(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """Let DuckDB read an object-store lake's s3:// files through the lake's own filesystem."""
    if not lake.local:
        from storage.objstore import duckdb_filesystem

        con.register_filesystem(duckdb_filesystem(lake.fs))


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _relative(lake: Lake) -> bool:
    """Whether the views name files relative to the lake root.

    DuckDB splits `file_search_path` on commas, so a root with a comma in it cannot be searched:
    such a lake's views name absolute paths (and do not survive a move). An object-store lake's
    views name absolute s3:// URIs.
    """
    return lake.local and "," not in lake.root


def set_search_path(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """Point DuckDB's relative file paths at the lake root (what every catalog reader must do)."""
    if _relative(lake):
        con.execute(f"SET file_search_path = {_sql_str(lake.root)}")


ROUND_SCORES = """
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

# The join and the aggregation are what cost (100k x 100k rows at the benchmark's scale), so:
# - one join key, `sample_key`. Rows of older partitions lack it and get it rebuilt from the four
#   lineage columns (coalesce evaluates that only where the key is null). The hash join runs on
#   hash(key), a 64-bit integer, with the string equality kept as a second condition so a hash
#   collision can never pair two samples: on the bare string DuckDB pushes a runtime string filter
#   into the Parquet scans that costs more than the join;
# - the judge's truths read from the boolean `<dim>_ok` columns. Only judgments with all four
#   null (older partitions) parse `details` JSON, in a second branch whose filter the Parquet
#   statistics prune away entirely for files that have the columns;
# - the pairs collapse to (round, packed state) counts before the per-dimension split: one base-5
#   digit per dimension, 0 = left out (a null verdict or truth), 1 tp, 2 fp, 3 tn, 4 fn.
_KEY = "coalesce({t}.sample_key, 'r' || {t}.round || '/' || {t}.checkpoint_id || '/' || {t}.prompt_id || '/' || {t}.sample_index)"
_TRUTH_TYPE = '{"dimensions": {' + ", ".join(f'"{d}": "BOOLEAN"' for d in DIMENSIONS) + "}}"
_ALL_NULL = " AND ".join(f"{d}_ok IS NULL" for d in DIMENSIONS)
_LINEAGE = "sample_key, round, checkpoint_id, prompt_id, sample_index"
_STATE = (
    "CASE WHEN a.{d}_verdict = 'yes' THEN (CASE WHEN j.{d}_ok THEN 1 WHEN NOT j.{d}_ok THEN 2 ELSE 0 END)"
    " WHEN a.{d}_verdict = 'no' THEN (CASE WHEN NOT j.{d}_ok THEN 3 WHEN j.{d}_ok THEN 4 ELSE 0 END)"
    " ELSE 0 END"
)
ASSESSMENT_AGREEMENT = f"""
WITH truths AS (
    SELECT {_LINEAGE}, {", ".join(f"{d}_ok" for d in DIMENSIONS)}
    FROM judgments WHERE NOT ({_ALL_NULL})
    UNION ALL  -- judgments written before the <dim>_ok columns: the truths from details JSON
    SELECT {_LINEAGE},
           {", ".join(f"TRY(json_transform(details, '{_TRUTH_TYPE}')).dimensions.{d} AS {d}_ok" for d in DIMENSIONS)}
    FROM judgments WHERE {_ALL_NULL}
),
combos AS (
    SELECT a.round, {" + ".join(f"{5**i} * ({_STATE.format(d=d)})" for i, d in enumerate(DIMENSIONS))} AS packed,
           count(*) AS k
    FROM assessments a
    JOIN truths j ON hash({_KEY.format(t="j")}) = hash({_KEY.format(t="a")})
                 AND {_KEY.format(t="j")} = {_KEY.format(t="a")}
    WHERE a.assessor = 'self'
    GROUP BY ALL
),
per_dim AS (
    SELECT round, d.dimension, (packed // d.w) % 5 AS state, k
    FROM combos CROSS JOIN (VALUES {", ".join(f"('{d}', {5**i})" for i, d in enumerate(DIMENSIONS))}) d(dimension, w)
)
SELECT round, dimension,
       CAST(sum(k) AS BIGINT) AS n,
       CAST(coalesce(sum(k) FILTER (WHERE state IN (1, 3)), 0) AS DOUBLE) / sum(k) AS accuracy,
       CAST(coalesce(sum(k) FILTER (WHERE state = 1), 0) AS BIGINT) AS tp,
       CAST(coalesce(sum(k) FILTER (WHERE state = 2), 0) AS BIGINT) AS fp,
       CAST(coalesce(sum(k) FILTER (WHERE state = 3), 0) AS BIGINT) AS tn,
       CAST(coalesce(sum(k) FILTER (WHERE state = 4), 0) AS BIGINT) AS fn
FROM per_dim WHERE state > 0
GROUP BY round, dimension
"""
SAMPLE_LINEAGE = """
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

# Each analyst query runs once per catalog build into a table `_lake.<view>` (from the same
# file sets as the table views, so exactly as current) and the view reads that table: a query
# then costs well under a millisecond, where computing it costs 30-110 ms on the shared 2-core
# machine at the benchmark's scale. A build copies a table from the previous catalog when its
# input tables' manifest versions and its query are unchanged, so a write pays only for the
# figures that depend on what it wrote.
ANALYST_VIEWS: dict[str, tuple[str, tuple[str, ...]]] = {
    "round_scores": (ROUND_SCORES, ("evaluations",)),
    "assessment_agreement": (ASSESSMENT_AGREEMENT, ("assessments", "judgments")),
    "sample_lineage": (SAMPLE_LINEAGE, ("sft_examples", "samples", "checkpoints", "rounds")),
}


def build_catalog(lake: Lake) -> Path:
    """Rebuild `<lake>/catalog.duckdb` from the manifests into a temp file, then swap it in."""
    final = catalog_path(lake)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{CATALOG_NAME}.{uuid.uuid4().hex}.tmp")
    try:
        con = duckdb.connect(str(tmp), config={"storage_compatibility_version": STORAGE_VERSION})
        try:
            set_search_path(con, lake)  # views are bound (their files opened) as they are created
            _register_fs(con, lake)
            relative = _relative(lake)
            con.execute("CREATE SCHEMA _lake")
            con.execute("CREATE TABLE _lake.layout (key VARCHAR, value VARCHAR)")
            con.execute(
                "INSERT INTO _lake.layout VALUES ('layout', ?), ('paths', ?), ('storage_version', ?)",
                [
                    LAYOUT if relative else "absolute",
                    "relative to the lake root: SET file_search_path = '<lake root>'"
                    if relative
                    else "absolute (the lake root has a comma, which file_search_path cannot hold)",
                    STORAGE_VERSION,
                ],
            )
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
                if relative:
                    files = [os.path.relpath(f, lake.root) for f in files]
                elif not lake.local:
                    files = [f"s3://{f}" for f in files]
                body = f'SELECT * FROM _lake."empty_{name}"'
                if files:
                    paths = ", ".join(_sql_str(p) for p in files)
                    body += (
                        f" UNION ALL BY NAME SELECT * FROM read_parquet([{paths}], hive_partitioning = true,"
                        " union_by_name = true, hive_types = {'part': 'VARCHAR'})"
                    )
                con.execute(f'CREATE VIEW "{name}" AS {body}')
            con.execute(
                "CREATE TABLE _lake.stored_inputs (view_name VARCHAR, table_name VARCHAR,"
                " manifest_version BIGINT, query_digest VARCHAR)"
            )
            reusable = _attach_previous(con, final)
            for view, (sql, inputs) in ANALYST_VIEWS.items():
                _store(con, view, sql, inputs, reusable)
                con.execute(f'CREATE VIEW "{view}" AS SELECT * FROM _lake."{view}"')
            if reusable:
                con.execute("DETACH _previous")
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, final)  # atomic: a reader opens the old catalog or the new one
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
    return final


def _attach_previous(con: duckdb.DuckDBPyConnection, previous: Path) -> bool:
    """ATTACH the catalog being replaced as `_previous`, if there is a readable one with stored figures."""
    if not previous.exists():
        return False
    try:
        con.execute(f"ATTACH {_sql_str(str(previous))} AS _previous (READ_ONLY)")
    except duckdb.Error:
        return False  # unreadable: every figure is computed afresh
    try:
        con.execute("SELECT 1 FROM _previous._lake.stored_inputs LIMIT 0")
    except duckdb.Error:  # built before the figures were stored
        con.execute("DETACH _previous")
        return False
    return True


def _store(
    con: duckdb.DuckDBPyConnection, view: str, sql: str, inputs: tuple[str, ...], reusable: bool
) -> None:
    """Create `_lake.<view>`: copied from `_previous` if built from the same inputs and query.

    A manifest version names one file set of a table, so equal versions of every input and an
    equal digest of the query mean equal figures. A stale previous catalog (a writer died before
    rebuilding it) has other versions and is not reused.
    """
    digest = hashlib.sha256(sql.encode()).hexdigest()[:16]
    tables = ", ".join(_sql_str(t) for t in inputs)
    con.execute(
        f"INSERT INTO _lake.stored_inputs SELECT {_sql_str(view)}, table_name, manifest_version, "
        f"{_sql_str(digest)} FROM _lake.state WHERE table_name IN ({tables})"
    )
    mine = (
        "SELECT table_name, manifest_version, query_digest FROM {db}_lake.stored_inputs"
        f" WHERE view_name = {_sql_str(view)} ORDER BY table_name"
    )
    if (
        reusable
        and con.execute(mine.format(db="_previous.")).fetchall() == con.execute(mine.format(db="")).fetchall()
    ):
        con.execute(f'CREATE TABLE _lake."{view}" AS SELECT * FROM _previous._lake."{view}"')
    else:
        con.execute(f'CREATE TABLE _lake."{view}" AS {sql}')


def catalog_is_current(lake: Lake) -> bool:
    """Whether the catalog file reflects every table's current manifest version."""
    path = catalog_path(lake)
    if not path.exists():
        return False
    try:
        with _open(lake) as con:
            built = dict(con.execute("SELECT table_name, manifest_version FROM _lake.state").fetchall())
            layout = _layout(con)
    except duckdb.Error:
        return False
    if layout != (LAYOUT if _relative(lake) else "absolute"):
        return False
    return built == {name: lake.manifest(name)["version"] for name in lake.tables}


def _layout(con: duckdb.DuckDBPyConnection) -> str | None:
    """The catalog's recorded layout; None for a catalog built before layouts were recorded."""
    try:
        rows = con.execute("SELECT value FROM _lake.layout WHERE key = 'layout'").fetchall()
    except duckdb.CatalogException:
        return None
    return rows[0][0] if rows else None


def connect_readonly(lake: Lake) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the current catalog (built first if the lake has none yet).

    The file is ATTACHed to a fresh in-memory database rather than opened with
    `duckdb.connect(path)`: DuckDB caches databases by path within a process, which would hand
    a later reader the catalog it opened before the last swap.
    """
    path = catalog_path(lake)
    if not path.exists() or (not lake.local and not catalog_is_current(lake)):
        # an object-store lake: this machine's catalog is rebuilt when a manifest moved on
        build_catalog(lake)
    con = _open(lake)
    if _layout(con) != (LAYOUT if _relative(lake) else "absolute") and _upgrade(lake):
        con.close()
        con = _open(lake)
    return con


def _open(lake: Lake) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    set_search_path(con, lake)
    _register_fs(con, lake)
    con.execute(f"ATTACH {_sql_str(str(catalog_path(lake)))} AS catalog (READ_ONLY)")
    con.execute("USE catalog")
    return con


def _upgrade(lake: Lake) -> bool:
    """Rebuild a catalog of an older layout (absolute paths: wrong once the lake moved).

    Under the writer lock, if it is free within a moment (entering it rebuilds a catalog that is
    not current); when a writer holds it, that writer rebuilds the catalog as it finishes, and this
    reader reads the old one meanwhile.
    """
    from storage.lock import LakeBusyError, WriterLock

    if lake._lock is not None and lake._lock._depth:  # this Lake is the writer
        build_catalog(lake)
        return True
    try:
        with WriterLock(lake.fs, lake.root, "catalog-upgrade", timeout_s=0.5):
            build_catalog(lake)
    except (LakeBusyError, OSError):
        return False
    return True


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
        if kind == "EXPLAIN":
            # EXPLAIN ANALYZE runs what it explains (a COPY ... TO writes its file): check that too
            inner = _EXPLAIN_PREFIX.sub("", st.query, count=1)
            if inner == st.query:
                raise CatalogQueryError("could not read what the EXPLAIN explains; write EXPLAIN SELECT ...")
            check_read_only(inner)
        elif kind not in READ_STATEMENTS:
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
