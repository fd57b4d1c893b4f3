"""Lake writes: idempotence, validation errors that write nothing, schema evolution, parts, metadata."""

from __future__ import annotations

import pyarrow as pa
import pytest

from storage.catalog import query
from storage.lake import Lake, LakeValidationError
from storage.schemas import TABLES, EvaluationRow, TableDef


def eval_rows(round: int, values: list[float], checkpoint: str = "c1") -> list[dict]:
    tags = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]
    return [
        dict(
            round=round,
            checkpoint_id=checkpoint,
            benchmark="shapeseval",
            tag=tags[i % 6],
            metric="accuracy",
            value=v,
            n=10 * (i + 1),
        )
        for i, v in enumerate(values)
    ]


def test_same_write_three_times_gives_one_copy_and_one_digest(tmp_path):
    lake = Lake(tmp_path)
    rows = eval_rows(1, [0.1, 0.2, 0.3, 0.4])
    infos = [lake.write_partition("evaluations", 1, rows, producer="evaluate") for _ in range(3)]
    assert {i.digest for i in infos} == {infos[0].digest}
    assert [i.written for i in infos] == [True, False, False]
    assert lake.read("evaluations").num_rows == 4
    assert len(list((tmp_path / "evaluations").rglob("*.parquet"))) == 1
    assert lake.digest("evaluations", 1) == infos[0].digest
    # row order does not change the content digest
    assert lake.write_partition("evaluations", 1, rows[::-1], producer="evaluate").digest == infos[0].digest
    assert query(lake, "SELECT count(*) AS n FROM evaluations").column("n").to_pylist() == [4]


def test_replacing_a_round_retires_the_old_file(tmp_path):
    lake = Lake(tmp_path, grace_s=0)
    lake.write_partition("evaluations", 1, eval_rows(1, [0.1, 0.2]), producer="evaluate")
    lake.write_partition("evaluations", 2, eval_rows(2, [0.5]), producer="evaluate")
    new = lake.write_partition("evaluations", 1, eval_rows(1, [0.9, 0.8, 0.7]), producer="evaluate")
    assert sorted(lake.read("evaluations", round=1).column("value").to_pylist()) == [0.7, 0.8, 0.9]
    assert lake.read("evaluations", round=2).num_rows == 1
    assert sorted(p.name for p in (tmp_path / "evaluations" / "round=1").rglob("*.parquet")) == [
        new.uri.rsplit("/", 1)[1]
    ]


def test_parts_are_replaced_independently_and_a_round_write_replaces_all(tmp_path):
    lake = Lake(tmp_path)
    lake.write_partition("evaluations", 3, eval_rows(3, [0.1], "a"), producer="e", part="ckpt-a")
    lake.write_partition("evaluations", 3, eval_rows(3, [0.2, 0.3], "b"), producer="e", part="ckpt-b")
    lake.write_partition("evaluations", 3, eval_rows(3, [0.4], "a"), producer="e", part="ckpt-a")
    got = query(lake, "SELECT part, checkpoint_id, value FROM evaluations ORDER BY value").to_pylist()
    assert got == [
        {"part": "ckpt-b", "checkpoint_id": "b", "value": 0.2},
        {"part": "ckpt-b", "checkpoint_id": "b", "value": 0.3},
        {"part": "ckpt-a", "checkpoint_id": "a", "value": 0.4},
    ]
    lake.write_partition("evaluations", 3, eval_rows(3, [0.5]), producer="e")
    assert [(p.round, p.part, p.rows) for p in lake.partitions("evaluations")] == [(3, "all", 1)]


def test_parquet_files_describe_their_producer(tmp_path):
    lake = Lake(tmp_path)
    info = lake.write_partition(
        "evaluations", 0, eval_rows(0, [0.5]), producer="evaluate", checkpoint="c0", config_digest="abc"
    )
    meta = lake.file_metadata(info.uri)
    assert meta["illume.producer"] == "evaluate"
    assert meta["illume.checkpoint"] == "c0"
    assert meta["illume.config_digest"] == "abc"
    assert meta["illume.schema_version"] == "1"
    assert meta["illume.content_digest"] == info.digest
    assert meta["illume.written_at"]


@pytest.mark.parametrize(
    ("table", "rows", "column", "row"),
    [
        ("evaluations", "wrong_type", "value", 1),
        ("evaluations", "missing", "metric", 2),
        ("evaluations", "extra", "colour", 0),
        ("assessments", "bad_literal", "object_verdict", 1),
        ("evaluations", "other_round", "round", 1),
        ("no_such_table", "ok", None, None),
    ],
)
def test_bad_rows_name_table_column_row_and_write_nothing(tmp_path, table, rows, column, row):
    lake = Lake(tmp_path)
    good = eval_rows(1, [0.1, 0.2, 0.3])
    if rows == "wrong_type":
        good[1]["value"] = "high"
    elif rows == "missing":
        del good[2]["metric"]
    elif rows == "extra":
        good[0]["colour"] = "red"
    elif rows == "other_round":
        good[1]["round"] = 2
    elif rows == "bad_literal":
        base = dict(
            round=1,
            checkpoint_id="c",
            prompt_id="p",
            sample_index=0,
            assessor="self",
            raw_text="",
            parse_status="ok",
        )
        good = [dict(base, object_verdict="yes"), dict(base, object_verdict="maybe")]
    with pytest.raises(LakeValidationError) as e:
        lake.write_partition(table, 1, good, producer="t")
    assert e.value.table == table and e.value.column == column and e.value.row == row
    assert repr(table) in str(e.value) and "Nothing was written" in str(e.value)
    if column:
        assert repr(column) in str(e.value) and f"row {row}" in str(e.value)
    assert not list(tmp_path.rglob("*.parquet"))


def test_arrow_input_is_validated_too(tmp_path):
    lake = Lake(tmp_path)
    t = pa.Table.from_pylist(eval_rows(1, [0.1, 0.2]))
    t = t.set_column(t.schema.get_field_index("n"), "n", pa.array([1, None]))
    with pytest.raises(LakeValidationError) as e:
        lake.write_partition("evaluations", 1, t, producer="t")
    assert (e.value.column, e.value.row) == ("n", 1)
    t = pa.Table.from_pylist(eval_rows(1, [0.1, 0.2]))  # no "split" column: it has a default
    assert lake.write_partition("evaluations", 1, t, producer="t").rows == 2
    assert lake.read("evaluations").column("split").to_pylist() == ["eval", "eval"]


class EvaluationRowV2(EvaluationRow):
    stderr: float | None = None  # a nullable column added later


def test_adding_a_nullable_column_keeps_old_partitions_readable(tmp_path):
    Lake(tmp_path).write_partition("evaluations", 1, eval_rows(1, [0.1, 0.2]), producer="e")
    v2 = {**TABLES, "evaluations": TableDef("evaluations", EvaluationRowV2, version=2)}
    lake = Lake(tmp_path, tables=v2)
    lake.write_partition("evaluations", 2, [dict(r, stderr=0.01) for r in eval_rows(2, [0.3])], producer="e")
    t = lake.read("evaluations")
    assert t.num_rows == 3 and t.schema.field("stderr").type == pa.float64()
    assert sorted(t.column("stderr").to_pylist(), key=str) == [0.01, None, None]
    got = query(lake, "SELECT round, stderr FROM evaluations ORDER BY round, value").to_pylist()
    assert got == [{"round": 1, "stderr": None}, {"round": 1, "stderr": None}, {"round": 2, "stderr": 0.01}]
    # the old-schema lake object still reads the new partition (extra column ignored)
    assert Lake(tmp_path, catalog=False).read("evaluations").num_rows == 3


def test_empty_lake_views_return_zero_rows(tmp_path):
    lake = Lake(tmp_path)
    for name in [*TABLES, "round_scores", "assessment_agreement", "sample_lineage"]:
        assert query(lake, f"SELECT * FROM {name}").num_rows == 0
