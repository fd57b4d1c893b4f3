"""Lake roots on object storage: which URIs are supported, their filesystem, conditional writes.

A lake root is a local folder, a `file://` URI, or `s3://bucket/prefix`. Anything else (gs://,
az://, hdfs://, http://, ...) is refused with `LakeURIError`, never rewritten into a path.

S3 is configured from the usual environment variables, read here because pyarrow's
`S3FileSystem` does not read `AWS_ENDPOINT_URL` itself:

- `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`: an S3-compatible server (MinIO, moto, Ceph, ...);
- `AWS_REGION` or `AWS_DEFAULT_REGION` (us-east-1 when an endpoint is set and no region is);
- credentials through the AWS default chain (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
  `AWS_SESSION_TOKEN`, profiles, instance roles).

Data files go through pyarrow's `S3FileSystem` (a multipart upload: no object exists until the
upload completes). The objects whose replacement is the commit (a table's `_manifest.json`) and
the writer's lease (`_writer.lock`) go through boto3's conditional writes: `If-None-Match: *`
creates only when absent, `If-Match: <etag>` replaces only the version that was read; S3 answers
412 PreconditionFailed (or 409 ConditionalRequestConflict) to the loser. boto3 is imported only
for an s3:// lake (`pip install boto3`, or the project's `s3` extra).
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlparse

import pyarrow.fs as pafs

SUPPORTED = ("a local folder", "file:///abs/path", "s3://bucket/prefix")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/")


class LakeURIError(ValueError):
    """A lake root that names a scheme this project does not support."""


class WriteConflict(RuntimeError):
    """A conditional write lost: the object was created or replaced by someone else first."""


def scheme_of(root: str) -> str | None:
    """The URI scheme of a lake root (`s3`, `file`, ...), or None for a plain path.

    `s3:/b/p` (one slash: what a path option makes of `s3://b/p`) counts as a URI too, so it is
    refused rather than taken for a local folder named `s3:`.
    """
    m = _SCHEME.match(root)
    return m.group(1).lower() if m else None


def check_root(root: str) -> str:
    """The root unchanged if its scheme is supported; LakeURIError otherwise."""
    scheme = scheme_of(root)
    if scheme is None:
        return root
    if scheme == "s3" and root.lower().startswith("s3://"):
        bucket = root[5:].split("/", 1)[0]
        if not bucket:
            raise LakeURIError(f"{root}: no bucket; write the lake root as s3://bucket/prefix")
        return root
    if scheme == "file" and root.lower().startswith("file://"):
        return root
    raise LakeURIError(
        f"{root}: lake URIs of scheme {scheme!r} are not supported (use {', '.join(SUPPORTED)}); "
        "for other object stores, mount the bucket and pass the mount point"
    )


def s3_options() -> dict:
    """Keyword arguments for pyarrow's S3FileSystem from the environment."""
    kw: dict = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if endpoint:
        u = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        kw["endpoint_override"] = u.netloc + u.path.rstrip("/")
        kw["scheme"] = u.scheme or "https"
        region = region or "us-east-1"  # an S3-compatible server: no region lookup (it may hang)
    if region:
        kw["region"] = region
    return kw


def open_root(root: str) -> tuple[pafs.FileSystem, str, str, ConditionalStore | None]:
    """(filesystem, path inside it, the root as a URI or absolute path, conditional store or None)."""
    root = check_root(root)
    scheme = scheme_of(root)
    if scheme is None:
        path = os.path.abspath(root)
        return pafs.LocalFileSystem(), path, path, None
    if scheme == "file":
        fs, path = pafs.FileSystem.from_uri(root)
        return fs, path, path, None
    bucket_prefix = root[5:].strip("/")
    bucket = bucket_prefix.split("/", 1)[0]
    fs = pafs.S3FileSystem(**s3_options())
    return fs, bucket_prefix, f"s3://{bucket_prefix}", ConditionalStore(bucket)


class ConditionalStore:
    """Small objects of one bucket with S3's conditional writes (keys are `bucket/...` paths)."""

    def __init__(self, bucket: str) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as e:
            raise LakeURIError(
                f"an s3:// lake needs boto3 for its atomic commits ({e}); pip install boto3"
            ) from None
        self.bucket = bucket
        kw = {}
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            kw["endpoint_url"] = endpoint if "://" in endpoint else f"https://{endpoint}"
            region = region or "us-east-1"
        if region:
            kw["region_name"] = region
        self.client = boto3.client(
            "s3",
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=20
            ),
            **kw,
        )

    def _key(self, path: str) -> str:
        bucket, _, key = path.partition("/")
        if bucket != self.bucket:
            raise ValueError(f"{path} is not in bucket {self.bucket}")
        return key

    @staticmethod
    def _conflict(e: Exception) -> bool:
        code = getattr(e, "response", {}).get("Error", {}).get("Code", "")
        return code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")

    @staticmethod
    def _missing(e: Exception) -> bool:
        code = getattr(e, "response", {}).get("Error", {}).get("Code", "")
        return code in ("NoSuchKey", "404", "NotFound")

    def check_bucket(self) -> None:
        """Raise FileNotFoundError when the bucket does not exist (or cannot be seen)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise FileNotFoundError(f"no bucket {self.bucket!r}") from None
            raise PermissionError(f"bucket {self.bucket!r}: {e}") from None

    def get(self, path: str) -> tuple[bytes | None, str | None]:
        """(body, etag), or (None, None) when the object does not exist."""
        from botocore.exceptions import ClientError

        try:
            r = self.client.get_object(Bucket=self.bucket, Key=self._key(path))
        except ClientError as e:
            if self._missing(e):
                return None, None
            raise
        return r["Body"].read(), r["ETag"]

    def put(self, path: str, body: bytes, etag: str | None) -> str:
        """Create the object (etag None: only if absent) or replace exactly version `etag`.

        Returns the new etag; raises WriteConflict when the condition fails.
        """
        from botocore.exceptions import ClientError

        cond = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
        try:
            r = self.client.put_object(Bucket=self.bucket, Key=self._key(path), Body=body, **cond)
        except ClientError as e:
            if self._conflict(e) or (etag is not None and self._missing(e)):
                raise WriteConflict(f"s3://{path} changed since it was read") from None
            raise
        return r["ETag"]

    def delete(self, path: str, etag: str | None = None) -> bool:
        """Delete the object (only version `etag` when given); False when it was not that version."""
        from botocore.exceptions import ClientError

        cond = {} if etag is None else {"IfMatch": etag}
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(path), **cond)
        except ClientError as e:
            if self._conflict(e) or self._missing(e):
                return False
            raise
        return True


def duckdb_filesystem(fs: pafs.FileSystem):
    """The lake's pyarrow filesystem as an fsspec filesystem for DuckDB's `register_filesystem`.

    DuckDB then reads `s3://...` paths through pyarrow (same endpoint and credentials as the
    lake) without its httpfs extension, which would have to be downloaded.
    """
    from storage.fsspec_s3 import DuckDBS3

    return DuckDBS3(fs)
