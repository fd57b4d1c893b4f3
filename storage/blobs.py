"""The lake's files that are not tables: root documents, checkpoint folders, reports.

A lake is a local folder or a bucket prefix (storage/objstore.py). Tables go through
`storage.lake.Lake`; everything else the pipeline keeps beside them goes through these functions,
which take the lake root as the user gave it and a lake-relative path:

- small documents (`pipeline.json`, `sampling.json`, `checkpoints/current`): `read_text` /
  `write_text`. Locally a write is staged beside the file and renamed; on S3 one PUT replaces the
  object whole, so a reader sees the old or the new document, never a part.
- checkpoint folders (`checkpoints/<content id>/`): written on the node that trains them into
  `checkpoint_root(lake)` (the lake's own folder locally, a node-local cache for a bucket),
  then `publish_checkpoint` uploads a bucket lake's folder, every file before `manifest.json`: a
  checkpoint whose manifest is visible is whole. Readers on any node call `local_checkpoint`,
  which downloads a bucket checkpoint once per node into the node cache, checks every file
  against the manifest's sha256, and renames it into place.
- reports and other outputs: `write_bytes`.

The node cache is `$ILLUME_NODE_CACHE`, else `~/.cache/illume`; it holds copies only (checkpoints
by content id, the trainer's resumable state), so deleting it loses nothing the lake holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from functools import lru_cache
from pathlib import Path

import pyarrow.fs as pafs

from storage.objstore import check_root, s3_options, scheme_of

MANIFEST_FILE = "manifest.json"  # a checkpoint folder's manifest (illume_core/model/checkpoint.py)


def remote(lake: str) -> bool:
    """True for a bucket lake (`s3://...`), False for a local folder or file:// URI."""
    return scheme_of(check_root(str(lake))) == "s3"


def _is_s3(location: str) -> bool:
    return str(location)[:5].lower() == "s3://"


def normalize(lake: str) -> str:
    """A lake root in one spelling: `s3://bucket/prefix` (scheme in lower case, no trailing
    slash) or a local path (a `file://` URI as its path); other schemes raise LakeURIError."""
    lake = check_root(str(lake))
    if _is_s3(lake):
        return "s3://" + lake[5:].rstrip("/")
    return lake[len("file://") :] if lake[:7].lower() == "file://" else lake


def uri(lake: str, rel: str = "") -> str:
    """The absolute location of a lake-relative path: a local absolute path, or s3://bucket/key."""
    lake = normalize(lake)
    if _is_s3(lake):
        return f"{lake}/{rel.lstrip('/')}" if rel else lake
    root = Path(lake).resolve()
    return str(root / rel) if rel else str(root)


@lru_cache(maxsize=1)
def s3_filesystem() -> pafs.S3FileSystem:
    """One pyarrow S3 filesystem per process, configured from the environment (objstore.s3_options)."""
    return pafs.S3FileSystem(**s3_options())


def _s3_path(location: str) -> str:
    return location[5:] if _is_s3(location) else location


def read_bytes(location: str) -> bytes | None:
    """The bytes of a file at an absolute location (path or s3:// URI); None when it does not exist."""
    if _is_s3(location):
        try:
            with s3_filesystem().open_input_stream(_s3_path(location)) as f:
                return f.read()
        except FileNotFoundError:
            return None
    p = Path(location)
    return p.read_bytes() if p.is_file() else None


def write_bytes_at(location: str, data: bytes) -> None:
    """Replace the file at an absolute location whole (a reader sees the old or the new bytes)."""
    if _is_s3(location):
        with s3_filesystem().open_output_stream(_s3_path(location)) as f:
            f.write(data)
        return
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_text(lake: str, rel: str) -> str | None:
    """A lake-relative document as text; None when it does not exist."""
    data = read_bytes(uri(lake, rel))
    return None if data is None else data.decode("utf-8")


def write_text(lake: str, rel: str, text: str) -> None:
    """Replace a lake-relative document whole."""
    write_bytes_at(uri(lake, rel), text.encode("utf-8"))


def write_bytes(lake: str, rel: str, data: bytes) -> str:
    """Replace a lake-relative file whole; returns its absolute location."""
    loc = uri(lake, rel)
    write_bytes_at(loc, data)
    return loc


def remove(location: str) -> None:
    """Delete the file at an absolute location, if it is there."""
    try:
        if _is_s3(location):
            s3_filesystem().delete_file(_s3_path(location))
        else:
            os.remove(location)
    except FileNotFoundError:
        pass


def exists(location: str) -> bool:
    """Whether a file exists at an absolute location (path or s3:// URI)."""
    if _is_s3(location):
        return s3_filesystem().get_file_info(_s3_path(location)).type == pafs.FileType.File
    return Path(location).is_file()


# ------------------------------------------------------------------------------ checkpoints


def node_cache() -> Path:
    """This node's cache folder ($ILLUME_NODE_CACHE, else ~/.cache/illume)."""
    return Path(os.environ.get("ILLUME_NODE_CACHE") or Path.home() / ".cache" / "illume")


def local_dir(lake: str, rel: str) -> Path:
    """A folder on this node for the lake-relative folder `rel`: the lake's own folder locally;
    for a bucket lake a node-local working folder (`<node cache>/lakes/<digest of the URI>/rel`)
    whose files are uploaded with `publish_checkpoint` or `upload_folder`."""
    if not remote(lake):
        return Path(uri(lake, rel))
    digest = hashlib.sha256(normalize(lake).encode()).hexdigest()[:16]
    return node_cache() / "lakes" / digest / rel


def checkpoint_root(lake: str) -> str:
    """Where this node writes new checkpoint folders of `lake` (and a trainer its resumable state):
    `<lake>/checkpoints` locally; for a bucket lake a node-local folder that `publish_checkpoint`
    uploads from."""
    return str(local_dir(lake, "checkpoints"))


def upload_folder(lake: str, folder: Path, rel: str) -> str:
    """Upload a node-local folder's files to the lake-relative folder `rel` of a bucket lake (a
    local lake's `local_dir` is the folder itself: nothing to do); returns the folder's location."""
    if not remote(lake):
        return str(folder)
    for f in sorted(Path(folder).rglob("*")):
        if f.is_file():
            write_bytes(lake, f"{rel}/{f.relative_to(folder).as_posix()}", f.read_bytes())
    return uri(lake, rel)


def read_manifest(folder: str) -> dict:
    """The manifest of a checkpoint folder (a local path or an s3:// URI); not verified here."""
    data = read_bytes(f"{str(folder).rstrip('/')}/{MANIFEST_FILE}")
    if data is None:
        raise FileNotFoundError(f"{folder}/{MANIFEST_FILE} is missing: {folder} is not a checkpoint folder")
    return json.loads(data)


def manifest_digest(folder: str) -> str:
    """sha256 of a checkpoint folder's manifest file (the checkpoints table's manifest_digest)."""
    data = read_bytes(f"{str(folder).rstrip('/')}/{MANIFEST_FILE}")
    if data is None:
        raise FileNotFoundError(f"{folder}/{MANIFEST_FILE} is missing: {folder} is not a checkpoint folder")
    return hashlib.sha256(data).hexdigest()


def publish_checkpoint(lake: str, folder: str) -> str:
    """A checkpoint folder written on this node, as the lake's checkpoint: the folder itself for a
    local lake; for a bucket lake, uploaded to `checkpoints/<id>/` (data files first, the manifest
    last, so a visible manifest means a whole checkpoint; an id already there is not uploaded
    again: ids are content digests) and returned as its s3:// URI. The folder then moves into
    this node's checkpoint cache, where `local_checkpoint` finds it (the next stage on this node
    does not download what it just wrote)."""
    if not remote(lake):
        return str(folder)
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    target = uri(lake, f"checkpoints/{manifest['id']}")
    if not exists(f"{target}/{MANIFEST_FILE}"):
        fs = s3_filesystem()
        for name in sorted(manifest["files"]):
            with open(folder / name, "rb") as src, fs.open_output_stream(_s3_path(f"{target}/{name}")) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        write_bytes_at(f"{target}/{MANIFEST_FILE}", (folder / MANIFEST_FILE).read_bytes())
    cached = node_cache() / "checkpoints" / manifest["id"]
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(folder, cached)
    except OSError:  # already cached (or on another filesystem): the upload is what counts
        pass
    return target


class CheckpointDownloadError(OSError):
    """A bucket checkpoint whose downloaded files do not match its manifest."""


def local_checkpoint(checkpoint: str) -> str:
    """A checkpoint folder on this node's disk: a local path as it is; an s3:// checkpoint
    downloaded once per node into `<node cache>/checkpoints/<id>/`, every file checked against the
    manifest's sha256 before the folder is renamed into place (concurrent workers on one node each
    stage their own copy; the first rename wins, the others are discarded)."""
    checkpoint = str(checkpoint)
    if not _is_s3(checkpoint):
        return checkpoint
    manifest_bytes = read_bytes(f"{checkpoint.rstrip('/')}/{MANIFEST_FILE}")
    if manifest_bytes is None:
        raise FileNotFoundError(f"{checkpoint}/{MANIFEST_FILE} is missing: not a checkpoint in the bucket")
    manifest = json.loads(manifest_bytes)
    final = node_cache() / "checkpoints" / manifest["id"]
    if (final / MANIFEST_FILE).is_file():
        return str(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{manifest['id']}.", dir=final.parent))
    try:
        fs = s3_filesystem()
        for name, want in sorted(manifest["files"].items()):
            h = hashlib.sha256()
            with fs.open_input_stream(_s3_path(f"{checkpoint.rstrip('/')}/{name}")) as src:
                with open(stage / name, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        h.update(chunk)
                        dst.write(chunk)
            if h.hexdigest() != want:
                raise CheckpointDownloadError(
                    f"{checkpoint}/{name}: sha256 {h.hexdigest()[:12]}... does not match the manifest's "
                    f"{want[:12]}...: the download was cut short (try again), or the bucket's copy is "
                    "damaged (delete that checkpoint's folder from the bucket and train its stage again)"
                )
        (stage / MANIFEST_FILE).write_bytes(manifest_bytes)
        try:
            os.rename(stage, final)
        except OSError:  # another worker on this node put it there first
            if not (final / MANIFEST_FILE).is_file():
                raise
            shutil.rmtree(stage, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return str(final)
