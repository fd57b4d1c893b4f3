"""The lake: Parquet tables hive-partitioned by round, written atomically and idempotently.

A partition is `<table>/round=<R>/part=<P>/data-<digest>.parquet`; a table's live file set is
listed in `<table>/_manifest.json`, replaced atomically. A write validates the rows, stages the
file under `_staging/`, reads it back, renames it into its partition folder and only then swaps
the manifest; readers follow the manifest (or the catalog views built from it), so they see the
old file set or the new one, never a mix. See docs/STORAGE.md for the full protocol.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args, get_origin

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import BaseModel, ValidationError

from storage.lock import WriterLock
from storage.objstore import LakeURIError, WriteConflict, open_root
from storage.schemas import TABLES, TableDef

DEFAULT_PART = "all"  # the part a round-wide write lands in
PAUSE_ENV = "ILLUME_LAKE_PAUSE"  # "<stage>:<seconds>": sleep at a write stage (crash tests use it)
_PART_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class LakeValidationError(ValueError):
    """Rows that do not fit the table's schema; nothing was written."""

    def __init__(self, table: str, column: str | None, row: int | None, problem: str, todo: str) -> None:
        self.table, self.column, self.row = table, column, row
        where = f"table {table!r}"
        if column is not None:
            where += f", column {column!r}"
        where += f", row {row}" if row is not None else ", all rows"
        super().__init__(f"{where}: {problem}. {todo} Nothing was written.")


class LakeWriteError(OSError):
    """A write that failed at the filesystem (full disk, permissions); the lake is unchanged."""


class LakeConflictError(LakeWriteError):
    """Another writer committed the table first; this write is not visible, nothing was lost."""


__all__ = [
    "Lake",
    "LakeConflictError",
    "LakeURIError",
    "LakeValidationError",
    "LakeWriteError",
    "PartitionInfo",
]


@dataclass(frozen=True)
class PartitionInfo:
    """One live partition file of a table."""

    table: str
    round: int
    part: str
    uri: str  # absolute path (or URI) of the Parquet file
    rows: int
    digest: str  # sha256 of the rows in canonical order: equal content, equal digest
    bytes: int
    written: bool = True  # False when identical content was already live (nothing rewritten)


def _pause(stage: str) -> None:
    """Crash-test hook: with ILLUME_LAKE_PAUSE=<stage>:<s>, announce the stage and sleep."""
    spec = os.environ.get(PAUSE_ENV, "")
    if spec.split(":")[0] == stage:
        print(f"illume-lake paused at {stage}", flush=True)
        time.sleep(float(spec.split(":")[1]))


def _plain_type(t: pa.DataType) -> pa.DataType:
    # Parquet names a list's item "element", arrow "item": the name is not content
    return pa.list_(_plain_type(t.value_type)) if pa.types.is_list(t) else t


def _plain(schema: pa.Schema) -> pa.Schema:
    """The schema without key-value metadata or item names (what digests and checks compare)."""
    return pa.schema([pa.field(f.name, _plain_type(f.type), f.nullable) for f in schema])


def canonical_order(table: pa.Table) -> pa.Table:
    """Rows sorted by every scalar column, so equal content gives equal bytes."""
    keys = [(f.name, "ascending") for f in table.schema if not pa.types.is_nested(f.type)]
    if not keys or table.num_rows < 2:
        return table
    return table.take(pc.sort_indices(table, sort_keys=keys))


def _canonical_bytes(arr: pa.Array) -> Iterator[bytes]:
    """The values of one array as bytes that do not depend on how its buffers are laid out."""
    yield pc.is_valid(arr).to_numpy(zero_copy_only=False).tobytes()
    t = arr.type
    if pa.types.is_list(t):
        yield pc.list_value_length(arr).fill_null(0).to_numpy().tobytes()
        yield from _canonical_bytes(pc.list_flatten(arr))
    elif pa.types.is_string(t) or pa.types.is_binary(t):
        filled = arr.fill_null(pa.scalar(b"" if pa.types.is_binary(t) else "", t))
        offsets = np.frombuffer(filled.buffers()[1], np.int32)[
            filled.offset : filled.offset + len(filled) + 1
        ]
        yield (offsets - offsets[0]).tobytes()
        data = filled.buffers()[2]
        yield b"" if data is None else data.to_pybytes()[offsets[0] : offsets[-1]]
    elif pa.types.is_boolean(t):
        yield arr.fill_null(False).to_numpy(zero_copy_only=False).tobytes()
    elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_timestamp(t):
        yield arr.fill_null(pa.scalar(0, t)).to_numpy(zero_copy_only=False).tobytes()
    else:
        raise TypeError(f"no canonical encoding for {t}; extend storage.lake._canonical_bytes")


def content_digest(table: pa.Table) -> str:
    """sha256 over the rows in canonical order: names, types and values, never buffer layout."""
    t = canonical_order(table).combine_chunks()
    h = hashlib.sha256(str(_plain(t.schema)).encode())
    for col in t.columns:
        arr = col.chunk(0) if col.num_chunks else pa.array([], col.type)
        for piece in _canonical_bytes(arr):
            h.update(piece)
    return h.hexdigest()


def _converts(value: Any, type_: pa.DataType) -> bool:
    try:
        pa.array([value], type_)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        return False
    return True


def _literal_values(tdef: TableDef, name: str) -> tuple | None:
    ann = tdef.model.model_fields[name].annotation
    for a in (ann, *get_args(ann)):
        if get_origin(a) is Literal:
            return get_args(a)
    return None


def validate(
    tdef: TableDef, data: pa.Table | Sequence[Mapping[str, Any] | BaseModel], round: int
) -> pa.Table:
    """Rows (dicts, row models or an arrow table) as an arrow table of the table's schema.

    Raises LakeValidationError naming table, column and row on the first problem.
    """
    schema, name = tdef.schema, tdef.name
    if not isinstance(data, pa.Table):
        dumped = []
        for i, row in enumerate(data):
            try:
                m = row if isinstance(row, tdef.model) else tdef.model.model_validate(row)
            except ValidationError as e:
                err = e.errors()[0]
                col = str(err["loc"][0]) if err["loc"] else None
                raise LakeValidationError(
                    name, col, i, err["msg"], f"Fix the row to match storage.schemas.{tdef.model.__name__}."
                ) from None
            dumped.append(m.model_dump())
        data = pa.Table.from_pylist(dumped, schema=schema)
    extra = [c for c in data.column_names if c not in schema.names]
    if extra:
        raise LakeValidationError(
            name, extra[0], None, "no such column", f"Known columns: {', '.join(schema.names)}."
        )
    columns = []
    for f in schema:
        if f.name not in data.column_names:
            info = tdef.model.model_fields[f.name]
            if info.is_required():
                raise LakeValidationError(
                    name, f.name, None, "required column missing", "Add the column to the rows."
                )
            columns.append(pa.array([info.default] * data.num_rows, f.type))
            continue
        col = data.column(f.name)
        if col.type != f.type:
            try:
                col = pc.cast(col, f.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
                bad = next((i for i, v in enumerate(col.to_pylist()) if not _converts(v, f.type)), 0)
                raise LakeValidationError(
                    name,
                    f.name,
                    bad,
                    f"{col.type} does not convert to {f.type} ({e})",
                    "Fix the value's type.",
                ) from None
        if not f.nullable and col.null_count:
            first = pc.index(pc.is_null(col), True).as_py()
            raise LakeValidationError(name, f.name, first, "null in a required column", "Give it a value.")
        allowed = _literal_values(tdef, f.name)
        if allowed is not None:
            ok = pc.or_kleene(pc.is_in(col, value_set=pa.array(allowed, f.type)), pc.is_null(col))
            if pc.any(pc.invert(ok)).as_py() is True:
                first = pc.index(ok, False).as_py()
                raise LakeValidationError(
                    name,
                    f.name,
                    first,
                    f"{col[first].as_py()!r} is not one of {allowed}",
                    "Use an allowed value.",
                )
        columns.append(col)
    table = pa.Table.from_arrays(columns, schema=schema)
    if "round" in schema.names and table.num_rows:
        off = pc.not_equal(table.column("round"), round)
        if pc.any(off).as_py():
            first = pc.index(off, True).as_py()
            raise LakeValidationError(
                name,
                "round",
                first,
                f"round {table.column('round')[first].as_py()} in a write to round {round}",
                "Write each round's rows to their own partition.",
            )
    return table


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """An older partition under the current schema: added nullable columns read as nulls."""
    cols = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(cols, schema=_plain(schema))


class Lake:
    """A lake rooted at a local folder, a file:// URI or s3://bucket/prefix (storage/objstore.py).

    Any other URI scheme raises LakeURIError. On S3 a write uploads its file straight to its
    final, content-named key (invisible: readers follow the manifest) and commits by replacing
    the manifest with a conditional write of the version it read; the writer lock is a lease
    object (storage/lock.py).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        tables: Mapping[str, TableDef] | None = None,
        *,
        catalog: bool = True,
        grace_s: float = 300.0,
        lock_timeout_s: float = 30.0,
        lock_ttl_s: float = 60.0,
    ) -> None:
        self.fs, self.root, self.uri, self.store = open_root(str(root))
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.tables: Mapping[str, TableDef] = tables if tables is not None else TABLES
        # a local lake rebuilds <lake>/catalog.duckdb when a writer releases it after writing; an object-store lake's
        # catalog is a per-machine file that readers build when it is not current (storage/catalog.py)
        self.catalog = catalog and self.local
        self.lock_ttl_s = lock_ttl_s
        self.grace_s = grace_s  # retired files stay this long for readers of an older catalog
        self.lock_timeout_s = lock_timeout_s
        try:
            if self.local:
                self.fs.create_dir(self.root, recursive=True)
            else:  # object stores have no folders; the bucket must exist
                self.store.check_bucket()
        except OSError as e:
            what = (
                "a writable folder"
                if self.local
                else "an existing bucket (and credentials that can write it)"
            )
            raise LakeWriteError(
                getattr(e, "errno", None),
                f"cannot use {self.uri} as the lake root ({e}); pass {what} as the lake root",
            ) from None
        self._lock: WriterLock | None = None
        self._dirty = False  # a partition was committed under the current writer hold

    # ---------------------------------------------------------------- paths and manifests
    def table_def(self, table: str) -> TableDef:
        if table not in self.tables:
            raise LakeValidationError(
                table, None, None, "unknown table", f"Known tables: {', '.join(self.tables)}."
            )
        return self.tables[table]

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def manifest(self, table: str) -> dict:
        """The table's manifest: {"version", "files": [...], "retired": [...]} (empty if new)."""
        return self._manifest(table)[0]

    def _manifest(self, table: str) -> tuple[dict, str | None]:
        """(manifest, version tag): the tag is the object's etag on S3 (what a commit must
        replace), None on a local lake or when the table has no manifest yet."""
        empty = {"table": table, "version": 0, "files": [], "retired": []}
        if self.store is not None:
            body, etag = self.store.get(self._path(table, "_manifest.json"))
            return (json.loads(body), etag) if body is not None else (empty, None)
        try:
            with self.fs.open_input_stream(self._path(table, "_manifest.json")) as f:
                return json.loads(f.read()), None
        except FileNotFoundError:
            return empty, None

    def _write_manifest(self, table: str, manifest: dict, tag: str | None = None) -> None:
        """Replace the manifest: os.replace locally; on S3 a conditional write of version `tag`
        (created only if absent when tag is None). A lost race raises LakeConflictError."""
        final = self._path(table, "_manifest.json")
        if self.store is not None:
            if self._lock is not None and self._lock._depth:
                self._lock.check()  # a writer whose lease was taken over commits nothing
            try:
                self.store.put(final, json.dumps(manifest, indent=1).encode(), tag)
            except WriteConflict:
                raise LakeConflictError(
                    f"table {table!r}: another writer committed to {self.uri} first (the manifest "
                    "changed since this write read it); this write is not visible and nothing of the "
                    "other's is lost. Write again."
                ) from None
            return
        tmp = self._path(table, f"_manifest.{uuid.uuid4().hex}.tmp")
        body = json.dumps(manifest, indent=1).encode()
        if self.local:
            try:
                with open(tmp, "wb") as f:
                    f.write(body)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, final)  # atomic: readers see the old manifest or the new one
            except BaseException:
                with suppress(OSError):
                    os.unlink(tmp)
                raise
        else:
            raise AssertionError("a non-local lake without conditional writes")  # open_root refuses it

    # ---------------------------------------------------------------- reading
    def partitions(self, table: str) -> list[PartitionInfo]:
        """The live partitions of a table, by round then part."""
        self.table_def(table)
        files = self.manifest(table)["files"]
        return [
            PartitionInfo(
                table, e["round"], e["part"], self._path(table, e["path"]), e["rows"], e["digest"], e["bytes"]
            )
            for e in sorted(files, key=lambda e: (e["round"], e["part"]))
        ]

    def files(self, table: str) -> list[str]:
        """Absolute paths of the table's live Parquet files (what the catalog views read)."""
        return [p.uri for p in self.partitions(table)]

    def read(self, table: str, round: int | None = None, part: str | None = None) -> pa.Table:
        """The table's rows (optionally one round / part) under the current schema."""
        schema = self.table_def(table).schema
        for attempt in range(3):
            parts = [
                p
                for p in self.partitions(table)
                if (round is None or p.round == round) and (part is None or p.part == part)
            ]
            try:
                pieces = [_conform(pq.read_table(p.uri, filesystem=self.fs), schema) for p in parts]
            except FileNotFoundError:
                # a file retired and collected between reading the manifest and opening it
                if attempt == 2:
                    raise
                continue
            return pa.concat_tables(pieces) if pieces else _plain(schema).empty_table()
        raise AssertionError("unreachable")

    def digest(self, table: str, round: int, part: str | None = None) -> str:
        """Content digest of a round (or one part), recomputed from the files."""
        return content_digest(self.read(table, round, part))

    def file_metadata(self, uri: str) -> dict[str, str]:
        """The key-value metadata of one Parquet file (producer, checkpoint, config digest, ...)."""
        with self.fs.open_input_file(uri) as f:
            meta = pq.read_schema(f).metadata or {}
        return {k.decode(): v.decode() for k, v in meta.items() if k.startswith(b"illume.")}

    # ---------------------------------------------------------------- writing
    @contextmanager
    def writer(self, owner: str, timeout_s: float | None = None) -> Iterator[Lake]:
        """Hold the lake's writer lock for several writes (raises LakeBusyError naming the holder)."""
        if self._lock is None:
            self._lock = WriterLock(
                self.fs, self.root, owner, timeout_s or self.lock_timeout_s, self.lock_ttl_s, self.store
            )
        elif not self._lock._depth:
            self._lock.owner = owner  # the holder record names this writer, not the Lake's first
        with self._lock:
            outermost = self._lock._depth == 1
            if outermost:
                self.recover()
            try:
                yield self
            finally:
                # the catalog is rebuilt once, when the outermost writer releases the lake after
                # writing: a flow's many writes under one hold cost one rebuild
                if outermost and self._dirty:
                    self._dirty = False
                    if self.catalog:
                        from storage.catalog import build_catalog

                        build_catalog(self)

    def write_partition(
        self,
        table: str,
        round: int,
        rows: pa.Table | Sequence[Mapping[str, Any] | BaseModel],
        *,
        producer: str,
        checkpoint: str | None = None,
        config_digest: str | None = None,
        part: str | None = None,
    ) -> PartitionInfo:
        """Replace one partition whole: `part=None` replaces the whole round, else that part.

        Idempotent: writing the same rows again leaves one copy (and rewrites nothing).
        """
        tdef = self.table_def(table)
        if part is not None and not _PART_RE.match(part):
            raise LakeValidationError(table, None, None, f"bad part name {part!r}", "Use [A-Za-z0-9_.-].")
        data = canonical_order(validate(tdef, rows, round))
        digest = content_digest(data)
        part_name = part or DEFAULT_PART
        rel = f"round={round}/part={part_name}/data-{digest[:16]}.parquet"
        with self.writer(owner=producer):
            manifest, tag = self._manifest(table)
            live = [e for e in manifest["files"] if e["round"] == round]
            replaced = live if part is None else [e for e in live if e["part"] == part_name]
            if [e["path"] for e in replaced] == [rel] and self.fs.get_file_info(
                self._path(table, rel)
            ).is_file:
                e = replaced[0]
                return PartitionInfo(
                    table, round, part_name, self._path(table, rel), e["rows"], digest, e["bytes"], False
                )
            meta = {
                "illume.table": table,
                "illume.round": str(round),
                "illume.part": part_name,
                "illume.producer": producer,
                "illume.checkpoint": checkpoint or "",
                "illume.config_digest": config_digest or "",
                "illume.schema_version": str(tdef.version),
                "illume.content_digest": digest,
                "illume.written_at": datetime.now(UTC).isoformat(),
            }
            try:
                if self.local:
                    size = self._stage_and_move(table, rel, data, meta, digest)
                else:
                    size = self._upload(table, rel, data, meta, digest)
                now = time.time()
                gone = {e["path"] for e in replaced} - {rel}
                entry = {
                    "round": round,
                    "part": part_name,
                    "path": rel,
                    "rows": data.num_rows,
                    "digest": digest,
                    "bytes": size,
                    "producer": producer,
                    "written_at": meta["illume.written_at"],
                }
                manifest = {
                    "table": table,
                    "schema_version": tdef.version,
                    "version": manifest["version"] + 1,
                    "files": [e for e in manifest["files"] if e not in replaced] + [entry],
                    "retired": [r for r in manifest["retired"] if r["path"] != rel]
                    + [{"path": p, "retired_at": now} for p in sorted(gone)],
                }
                self._write_manifest(table, manifest, tag)
            except OSError as e:
                # a full disk or lost permissions mid-write: the manifest still lists the old
                # files; what this write left (staged or moved, never listed) goes now
                with suppress(OSError):
                    if self.local:
                        self.fs.delete_dir_contents(self._path("_staging"), missing_dir_ok=True)
                    self._collect(table, self.grace_s)
                if isinstance(e, LakeWriteError):
                    raise
                raise LakeWriteError(
                    e.errno,
                    f"table {table!r}, round {round}: the write failed ({e.strerror or e}); the lake is "
                    f"unchanged. Free space (or fix permissions) under {self.uri} and write again.",
                ) from e
            _pause("committed")
            self._collect(table, self.grace_s)
            self._dirty = True  # the catalog follows when the writer releases the lake
        return PartitionInfo(table, round, part_name, self._path(table, rel), data.num_rows, digest, size)

    def _check_back(self, path: str, data: pa.Table, digest: str, what: str) -> None:
        back = pq.read_table(path, filesystem=self.fs)
        if _plain(back.schema) != _plain(data.schema) or back.num_rows != data.num_rows:
            raise LakeWriteError(f"{what} {path} does not read back as written; the lake is unchanged")
        if content_digest(back) != digest:
            raise LakeWriteError(f"{what} {path} reads back with other content; the lake is unchanged")

    def _stage_and_move(self, table: str, rel: str, data: pa.Table, meta: dict, digest: str) -> int:
        """Local lake: write under _staging/, check it, rename it to its partition path."""
        staged_dir = self._path("_staging", uuid.uuid4().hex)
        self.fs.create_dir(staged_dir, recursive=True)
        staged = f"{staged_dir}/data.parquet"
        pq.write_table(data.replace_schema_metadata(meta), staged, filesystem=self.fs, compression="zstd")
        self._check_back(staged, data, digest, "staged file")
        size = self.fs.get_file_info(staged).size
        _pause("staged")
        self.fs.create_dir(self._path(table, rel.rsplit("/", 1)[0]), recursive=True)
        self.fs.move(staged, self._path(table, rel))
        self.fs.delete_dir(staged_dir)
        _pause("moved")
        return size

    def _upload(self, table: str, rel: str, data: pa.Table, meta: dict, digest: str) -> int:
        """Object store: upload straight to the content-named key (no rename on S3).

        The key is invisible until the manifest lists it (readers never list keys), and an
        upload is a multipart upload that creates no object until it completes: a writer that
        dies mid-upload leaves nothing, or at most an unlisted object the next writer collects.
        """
        path = self._path(table, rel)
        with self.fs.open_output_stream(path) as out:
            w = pq.ParquetWriter(out, data.schema.with_metadata(meta), compression="zstd")
            half = data.num_rows // 2
            w.write_table(data.slice(0, half))
            _pause("uploading")  # crash tests: die with half of the rows sent
            w.write_table(data.slice(half))
            w.close()
        self._check_back(path, data, digest, "uploaded file")
        _pause("staged")
        _pause("moved")
        return self.fs.get_file_info(path).size

    # ---------------------------------------------------------------- recovery and garbage
    def _collect(self, table: str, grace_s: float, listing: list[pafs.FileInfo] | None = None) -> None:
        """Delete retired files older than grace_s and files no manifest ever listed.

        On object storage an unlisted file is deleted only once it is older than grace_s too: a
        writer that lost a commit race leaves its upload there, and a writer that has just
        uploaded (and not yet committed) must not lose it to another's clean-up.
        """
        manifest, tag = self._manifest(table)
        now = time.time()
        keep_retired = [r for r in manifest["retired"] if now - r["retired_at"] < grace_s]
        known = {e["path"] for e in manifest["files"]} | {r["path"] for r in keep_retired}
        base = self._path(table)
        if listing is None:
            listing = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        for info in listing:
            rel = info.path[len(base) + 1 :]
            if info.is_file and rel.startswith("round=") and rel not in known:
                young = not self.local and info.mtime is not None and now - info.mtime.timestamp() < grace_s
                if not young:
                    self.fs.delete_file(info.path)
        if len(keep_retired) != len(manifest["retired"]):
            self._write_manifest(table, {**manifest, "retired": keep_retired}, tag)

    def recover(self) -> None:
        """Clean what a crashed writer left: staged files and uncommitted partition files.

        Runs under the writer lock (on every `writer()` entry); the catalog is rebuilt too, so a
        writer killed between its manifest swap and its catalog rebuild leaves no stale catalog.
        """
        if self.local:
            self.fs.delete_dir_contents(self._path("_staging"), missing_dir_ok=True)
            for table in self.tables:
                self._collect(table, self.grace_s)
        else:
            # one listing of the whole lake instead of one per table (each is a request)
            by_table: dict[str, list[pafs.FileInfo]] = {}
            sel = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
            for info in self.fs.get_file_info(sel):
                by_table.setdefault(info.path[len(self.root) + 1 :].split("/", 1)[0], []).append(info)
            for table in self.tables:
                if table in by_table:
                    self._collect(table, self.grace_s, by_table[table])
        if self.catalog:
            from storage.catalog import build_catalog, catalog_is_current

            if not catalog_is_current(self):
                build_catalog(self)

    def vacuum(self, grace_s: float = 0.0) -> None:
        """Delete retired files now (readers of an older catalog may then miss them)."""
        with self.writer(owner="vacuum"):
            for table in self.tables:
                self._collect(table, grace_s)

    def describe(self) -> dict[str, Any]:
        """A summary of the lake: per table, partitions and rows."""
        return {t: [asdict(p) for p in self.partitions(t)] for t in self.tables if self.partitions(t)}


def main(argv: list[str]) -> None:
    """`python -m storage.lake ROOT TABLE ROUND JSONFILE PRODUCER`: write one partition (crash tests)."""
    root, table, round_, path, producer = argv
    with open(path) as f:
        rows = json.load(f)
    info = Lake(root).write_partition(table, int(round_), rows, producer=producer)
    print(json.dumps(asdict(info)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])


# columns that differ between two runs of the same work (clocks, the run's own ids)
VOLATILE = {
    "rounds": ("started_at", "ended_at"),
    "checkpoints": ("created_at", "manifest_digest"),  # the manifest file records created_at
    "task_runs": ("started_at", "ended_at", "compute_seconds", "flow_run_id"),
}


def lake_state(root: str, volatile: Mapping[str, tuple[str, ...]] = VOLATILE) -> dict[str, tuple[int, str]]:
    """Per `table/round=R/part=P`: (rows, digest of the columns not in `volatile`).

    Two lakes that did the same work (a moved copy, a bucket and a local folder, a run on a
    cluster and one in a single process) have equal states; checkpoint paths are compared
    lake-relative.
    """
    lk = Lake(root, catalog=False)
    out = {}
    for t in lk.tables:
        for p in lk.partitions(t):
            data = lk.read(t, p.round, p.part)
            data = data.drop_columns([c for c in volatile.get(t, ()) if c in data.column_names])
            if t == "checkpoints":
                rel = [u.replace(lk.uri, "<lake>") for u in data.column("uri").to_pylist()]
                data = data.set_column(data.schema.get_field_index("uri"), "uri", pa.array(rel))
            out[f"{t}/round={p.round}/part={p.part}"] = (data.num_rows, content_digest(data))
    return out
