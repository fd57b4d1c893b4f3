"""The catalog: analyst views on a handmade dataset, read-only queries, the `illume sql` command."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from flows.cli import app
from storage.catalog import CatalogQueryError, query
from storage.lake import Lake
from storage.schemas import sample_key

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    lake = Lake(tmp_path_factory.mktemp("lake"))
    with lake.writer(owner="fixture"):
        for r, ckpt, scores in [
            (0, "c0", {"counting": 0.2, "colors": 0.6}),
            (1, "c1", {"counting": 0.5, "colors": 0.7}),
        ]:
            rows = [
                dict(
                    round=r,
                    checkpoint_id=ckpt,
                    benchmark="shapeseval",
                    tag=t,
                    metric="accuracy",
                    value=v,
                    n=50,
                )
                for t, v in scores.items()
            ]
            rows.append(dict(rows[0], benchmark="other", value=0.99))  # not shapeseval: ignored
            lake.write_partition("evaluations", r, rows, producer="evaluate")
        # self-assessment vs judge on 4 samples of round 1: object yes/yes/no/no vs truth T/F/F/T
        verdicts, truths = ["yes", "yes", "no", "no"], [True, False, False, True]
        base = dict(round=1, checkpoint_id="c0", prompt_id="p0", raw_text="...", parse_status="ok")
        assessments = [
            dict(
                base,
                sample_index=i,
                sample_key=sample_key(1, "c0", "p0", i),
                assessor="self",
                object_verdict=v,
                color_verdict="yes",
                count_verdict=None,
            )
            for i, v in enumerate(verdicts)
        ]
        assessments.append(
            dict(base, sample_index=0, assessor="judge", object_verdict="no")
        )  # not self: ignored
        lake.write_partition("assessments", 1, assessments, producer="assess")

        def ref(i: int) -> dict:  # the columns that name sample i of round 1
            return dict(
                round=1,
                checkpoint_id="c0",
                prompt_id="p0",
                sample_index=i,
                sample_key=sample_key(1, "c0", "p0", i),
            )

        judgments = [
            dict(
                ref(i),
                tag="colors",
                correct=t,
                reason="",
                details=json.dumps({"dimensions": {"object": t, "color": True, "count": True}}),
                object_ok=t,
                color_ok=True,
                count_ok=True,  # spatial_ok stays null: the judge had no spatial truth
            )
            for i, t in enumerate(truths)
        ]
        lake.write_partition("judgments", 1, judgments, producer="judge")
        samples = [
            dict(
                ref(i),
                seed=100 + i,
                png=b"\x89PNG",
                image_tokens=[1, 2, 3],
            )
            for i in range(4)
        ]
        lake.write_partition("samples", 1, samples, producer="sample")
        sft = [
            dict(
                {k: v for k, v in ref(i).items() if k != "sample_key"},
                example_id=f"e{i}",
                conversation="[]",
                image_refs=[sample_key(1, "c0", "p0", i)],
                strategy="direct",
                source_sample=sample_key(1, "c0", "p0", i),
            )
            for i in (0, 3)
        ]
        lake.write_partition("sft_examples", 1, sft, producer="reformat")
        lake.write_partition(
            "rounds",
            1,
            [
                dict(
                    round=1, base_checkpoint="c0", candidate_checkpoint="c1", status="promoted", started_at=T0
                )
            ],
            producer="promote",
        )
        lake.write_partition(
            "checkpoints",
            0,
            [
                dict(
                    checkpoint_id="c0",
                    round=0,
                    stage="stage3",
                    uri="/ck/c0",
                    manifest_digest="d",
                    created_at=T0,
                )
            ],
            producer="train",
        )
    return lake


def test_round_scores_per_tag_and_overall(lake):
    got = query(lake, "SELECT round, tag, value, n FROM round_scores ORDER BY round, tag").to_pylist()
    assert [(g["round"], g["tag"], round(g["value"], 6), g["n"]) for g in got] == [
        (0, "colors", 0.6, 50), (0, "counting", 0.2, 50), (0, "overall", 0.4, 100),
        (1, "colors", 0.7, 50), (1, "counting", 0.5, 50), (1, "overall", 0.6, 100),
    ]  # fmt: skip


def test_assessment_agreement_confusion_counts(lake):
    got = {r["dimension"]: r for r in query(lake, "SELECT * FROM assessment_agreement").to_pylist()}
    assert set(got) == {"object", "color"}  # count verdicts are null; spatial has no truth
    obj = got["object"]
    assert (obj["n"], obj["tp"], obj["fp"], obj["tn"], obj["fn"], obj["accuracy"]) == (4, 1, 1, 1, 1, 0.5)
    assert (got["color"]["n"], got["color"]["tp"], got["color"]["accuracy"]) == (4, 4, 1.0)


def test_sample_lineage_links_examples_to_samples_checkpoints_and_rounds(lake):
    got = query(lake, "SELECT * FROM sample_lineage ORDER BY example_id").to_pylist()
    assert [(g["example_id"], g["sample_index"], g["seed"]) for g in got] == [("e0", 0, 100), ("e3", 3, 103)]
    assert {(g["trained_checkpoint"], g["sampled_by_checkpoint"], g["sampler_stage"]) for g in got} == {
        ("c1", "c0", "stage3")
    }


@pytest.mark.parametrize(
    "sql",
    [
        "ATTACH '/tmp/x.duckdb' AS x",
        "COPY (SELECT 1) TO '/tmp/x.csv'",
        "INSTALL httpfs",
        "LOAD json",
        "CREATE TABLE t AS SELECT 1",
        "DROP VIEW evaluations",
        "SET threads = 1",
        "PRAGMA version",
        "SELECT 1; DELETE FROM evaluations",
    ],
)
def test_query_refuses_anything_but_reads(lake, sql):
    with pytest.raises(CatalogQueryError, match="refused|read-only"):
        query(lake, sql)


def test_illume_sql_command(lake):
    runner = CliRunner()
    out = runner.invoke(
        app,
        [
            "sql",
            "SELECT tag, n FROM round_scores WHERE round = 1 ORDER BY tag",
            "--lake",
            lake.root,
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    assert [json.loads(line)["tag"] for line in out.stdout.splitlines()] == ["colors", "counting", "overall"]
    out = runner.invoke(app, ["sql", "SELECT round FROM rounds", "--lake", lake.root, "--csv"])
    assert out.exit_code == 0 and out.stdout.split() == ['"round"', "1"]
    out = runner.invoke(app, ["sql", "SELECT sample_key, png FROM samples LIMIT 1", "--lake", lake.root])
    assert out.exit_code == 0 and "<4 bytes>" in out.stdout
    out = runner.invoke(app, ["sql", "DROP VIEW samples", "--lake", lake.root])
    assert out.exit_code == 2 and "refused" in out.output


def test_old_partitions_without_the_version_2_columns_read_through_the_views(tmp_path):
    """Assessments and judgments written before sample_key and <dim>_ok: same agreement figures."""
    import pyarrow.parquet as pq

    from storage.catalog import build_catalog, catalog_path

    base = dict(round=2, checkpoint_id="c0", prompt_id="p0", raw_text="...", parse_status="ok")
    verdicts, truths = ["yes", "yes", "no", "no"], [True, False, False, True]
    lake = Lake(tmp_path / "lake")
    lake.write_partition(
        "assessments",
        2,
        [
            dict(base, sample_index=i, assessor="self", object_verdict=v, count_verdict="yes")
            for i, v in enumerate(verdicts)
        ],
        producer="assess",
    )
    lake.write_partition(
        "judgments",
        2,
        [
            dict(
                round=2, checkpoint_id="c0", prompt_id="p0", sample_index=i, tag="counting", correct=t,
                reason="", details=json.dumps({"dimensions": {"object": t, "count": False}}),
            )
            for i, t in enumerate(truths)
        ],
        producer="judge",
    )  # fmt: skip
    # rewrite each file without the version-2 columns, exactly as an older writer left it
    new_columns = ["sample_key", "object_ok", "count_ok", "color_ok", "spatial_ok"]
    for table in ("assessments", "judgments"):
        (uri,) = lake.files(table)
        old = pq.read_table(uri)
        pq.write_table(old.drop_columns([c for c in new_columns if c in old.column_names]), uri)
        assert not set(new_columns) & set(pq.read_schema(uri).names)
    catalog_path(lake).unlink()  # built from the files as written; rebuild from the old-format ones
    build_catalog(lake)

    assert lake.read("judgments", 2).column("object_ok").null_count == 4
    got = {r["dimension"]: r for r in query(lake, "SELECT * FROM assessment_agreement").to_pylist()}
    assert set(got) == {"object", "count"}  # color and spatial: no verdict / no truth
    obj, count = got["object"], got["count"]
    assert (obj["n"], obj["tp"], obj["fp"], obj["tn"], obj["fn"], obj["accuracy"]) == (4, 1, 1, 1, 1, 0.5)
    assert (count["n"], count["fp"], count["accuracy"]) == (4, 4, 0.0)
    nulls = query(lake, "SELECT count(*) AS n FROM judgments WHERE sample_key IS NULL AND object_ok IS NULL")
    assert nulls.column("n")[0].as_py() == 4

    # new-format judgments over the old assessments (no sample_key there): the stored figures
    # are recomputed because judgments changed, and the pairs still join
    lake.write_partition(
        "judgments",
        2,
        [
            dict(
                round=2, checkpoint_id="c0", prompt_id="p0", sample_index=i, tag="counting", correct=False,
                reason="", sample_key=sample_key(2, "c0", "p0", i), object_ok=True, count_ok=True,
            )
            for i in range(4)
        ],
        producer="judge",
    )  # fmt: skip
    got = {r["dimension"]: r for r in query(lake, "SELECT * FROM assessment_agreement").to_pylist()}
    obj, count = got["object"], got["count"]
    assert (obj["n"], obj["tp"], obj["fp"], obj["tn"], obj["fn"], obj["accuracy"]) == (4, 2, 0, 0, 2, 0.5)
    assert (count["n"], count["tp"], count["accuracy"]) == (4, 4, 1.0)


def _duckdb_1x_cli() -> str | None:
    """The DuckDB 1.x CLI binary of the pip package `duckdb-cli` (a dev extra), or None."""
    import importlib.util
    import os
    import shutil
    import subprocess
    import sys

    spec = importlib.util.find_spec("duckdb_cli")
    candidates = [os.path.join(os.path.dirname(spec.origin), "duckdb")] if spec and spec.origin else []
    candidates.append(shutil.which("duckdb", path=os.path.dirname(sys.executable)) or "")
    for exe in candidates:
        if exe and os.access(exe, os.X_OK):
            version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
            if version.startswith("v1."):
                return exe
    return None


def _cli_json(exe: str, db, *sql: str, cwd=None) -> list[dict]:
    import subprocess

    args = [exe, "-readonly", "-json", str(db)]
    for s in sql:
        args += ["-c", s]
    out = subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=60)
    assert out.returncode == 0, out.stderr
    results, text, decoder = [], out.stdout.strip(), json.JSONDecoder()
    while text:  # one JSON array per statement that returns rows; the last one is the query's
        value, end = decoder.raw_decode(text)
        results.append(value)
        text = text[end:].strip()
    return results[-1] if results else []


def test_catalog_opens_read_only_in_the_duckdb_1x_cli_and_in_duckdb_2(lake, tmp_path):
    """The catalog is written in a storage format DuckDB 1.x reads (2.0's default is refused by 1.5)."""
    import duckdb

    from storage.catalog import STORAGE_VERSION, catalog_path

    exe = _duckdb_1x_cli()
    if exe is None:
        pytest.skip("no DuckDB 1.x CLI: `pip install -e .[dev]` installs duckdb-cli (pinned) with it")
    path = catalog_path(lake)
    assert duckdb.__version__.startswith("2.")  # the writer
    # the CLI as a user starts it, with the one-line setting docs/STORAGE.md gives
    got = _cli_json(
        exe,
        path,
        f"SET file_search_path = '{lake.root}'",
        "SELECT round, tag, round(value, 3) AS v FROM round_scores WHERE round = 1 ORDER BY tag",
    )
    assert [(g["round"], g["tag"], g["v"]) for g in got] == [
        (1, "colors", 0.7),
        (1, "counting", 0.5),
        (1, "overall", 0.6),
    ]
    got = _cli_json(
        exe,
        path,
        f"SET file_search_path = '{lake.root}'",
        "SELECT count(*) AS n, min(part) AS p FROM samples",
    )
    assert got == [{"n": 4, "p": "all"}]
    # or started inside the lake folder, with no setting at all
    got = _cli_json(
        exe, "catalog.duckdb", "SELECT version() AS v, count(*) AS n FROM evaluations", cwd=lake.root
    )
    assert got[0]["v"].startswith("v1.") and got[0]["n"] == 6
    # DuckDB 2 reads the same file; the layout records the storage format it was written in
    assert query(lake, "SELECT value FROM _lake.layout WHERE key = 'storage_version'").to_pylist() == [
        {"value": STORAGE_VERSION}
    ]
    assert query(lake, "SELECT count(*) AS n FROM samples").to_pylist() == [{"n": 4}]


def test_a_moved_lake_reads_its_own_files(lake, tmp_path):
    """Views name files relative to the lake root: a copy reads the copy, even once the original is gone."""
    import shutil

    first = tmp_path / "first"
    shutil.copytree(lake.root, first)
    moved = tmp_path / "elsewhere" / "restored"
    shutil.copytree(first, moved)
    shutil.rmtree(first)  # nothing may still point there
    (moved / "samples" / "_manifest.json").stat()  # the copy has its own files
    want = query(lake, "SELECT * FROM round_scores ORDER BY ALL").to_pylist()
    assert query(Lake(moved), "SELECT * FROM round_scores ORDER BY ALL").to_pylist() == want
    got = query(Lake(moved), "SELECT count(*) AS n, count(DISTINCT part) AS parts FROM samples").to_pylist()
    assert got == [{"n": 4, "parts": 1}]
    out = CliRunner().invoke(
        app, ["sql", "SELECT sample_key FROM samples ORDER BY 1", "--lake", str(moved), "--csv"]
    )
    assert out.exit_code == 0, out.output
    assert out.stdout.split()[1:] == [f'"{sample_key(1, "c0", "p0", i)}"' for i in range(4)]
    exe = _duckdb_1x_cli()
    if exe is not None:  # the stock 1.x CLI on the copy, too
        got = _cli_json(
            exe,
            moved / "catalog.duckdb",
            f"SET file_search_path = '{moved}'",
            "SELECT count(*) AS n FROM judgments",
        )
        assert got == [{"n": 4}]


def test_a_catalog_with_absolute_paths_is_rebuilt(lake, tmp_path):
    """A catalog built before relative paths (no recorded layout) is not current; a reader rebuilds it."""
    import shutil

    import duckdb

    from storage.catalog import LAYOUT, catalog_is_current, catalog_path

    copy = Lake(shutil.copytree(lake.root, tmp_path / "copy"))
    con = duckdb.connect(str(catalog_path(copy)))
    con.execute("DROP TABLE _lake.layout")  # as an older build left it
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'layout'").fetchall() == [
        (0,)
    ]
    con.close()
    assert query(copy, "SELECT value FROM _lake.layout WHERE key = 'layout'").to_pylist() == [
        {"value": LAYOUT}
    ]
    assert catalog_is_current(copy)


def test_the_catalog_is_rebuilt_once_when_the_writer_releases_the_lake(tmp_path, monkeypatch):
    import storage.catalog as catalog

    builds = []
    real = catalog.build_catalog
    monkeypatch.setattr(catalog, "build_catalog", lambda lake: builds.append(1) or real(lake))
    lake = Lake(tmp_path / "lake")
    row = dict(round=0, checkpoint_id="c0", benchmark="shapeseval", tag="colors", metric="accuracy", n=1)
    with lake.writer(owner="flow"):
        builds.clear()  # entering recovers a fresh lake, which builds its first (empty) catalog
        lake.write_partition("evaluations", 0, [dict(row, value=0.25)], producer="a")
        lake.write_partition("evaluations", 1, [dict(row, round=1, value=0.75)], producer="b")
        assert builds == []  # nothing rebuilt while the writer holds the lake
    assert builds == [1]
    assert query(lake, "SELECT count(*) AS n FROM evaluations").to_pylist() == [{"n": 2}]
    lake.write_partition("evaluations", 2, [dict(row, round=2, value=0.5)], producer="c")  # its own hold
    assert builds == [1, 1] and query(lake, "SELECT count(*) AS n FROM evaluations").to_pylist() == [{"n": 3}]
    with lake.writer(owner="reader-only"):
        pass
    assert builds == [1, 1]  # a hold that wrote nothing leaves the catalog alone
