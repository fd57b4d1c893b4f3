"""pyarrow's S3 filesystem seen through fsspec, for the two readers that speak only fsspec.

- DuckDB (`register_filesystem`) reads a bucket lake's `s3://...` Parquet through it, with the
  lake's own endpoint and credentials, without its httpfs extension (which it would download).
- Prefect's `RemoteFileSystem` block keeps a bucket lake's task results and cache records under
  `<lake>/_prefect/` through it, as `lakes3://bucket/prefix/...`: a protocol of its own, so this
  project never replaces s3fs where a user has it installed for `s3://`. The project's
  `fsspec.specs` entry point registers `lakes3` in every process where illume is installed (a
  Prefect worker reading a result too); `register()` does so explicitly.

Both are fsspec's own `ArrowFSWrapper` over one `pyarrow.fs.S3FileSystem` configured from the
environment (storage/objstore.py: `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...).
"""

from __future__ import annotations

import fsspec
from fsspec.implementations.arrow import ArrowFSWrapper

PROTOCOL = "lakes3"


class _ArrowS3(ArrowFSWrapper):
    protocol = ("s3",)

    def __init__(self, fs=None, **kwargs):
        if fs is None:
            from storage.blobs import s3_filesystem

            fs = s3_filesystem()
        super().__init__(fs, **kwargs)

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        for p in cls.protocol:
            path = path.removeprefix(f"{p}://")
        return path.rstrip("/")


class DuckDBS3(_ArrowS3):
    """`s3://bucket/key` for DuckDB's views."""

    protocol = ("s3",)


class LakeS3FileSystem(_ArrowS3):
    """`lakes3://bucket/key` for Prefect's result and cache-record storage."""

    protocol = (PROTOCOL,)


def register() -> None:
    """Make `lakes3://` known to fsspec in this process (the entry point does it where installed)."""
    fsspec.register_implementation(PROTOCOL, LakeS3FileSystem, clobber=True)


def prefect_basepath(lake_uri: str, rel: str) -> str:
    """`s3://bucket/prefix` + rel as the `lakes3://` base path of a Prefect RemoteFileSystem block."""
    return f"{PROTOCOL}://{lake_uri.removeprefix('s3://').rstrip('/')}/{rel}"
