"""Wisp's object store: content-addressed, verified, write-once, on the local filesystem or S3.

>>> store = open_store(load_settings())                      # doctest: +SKIP
>>> ref = store.put_file(path, namespace="raw")              # doctest: +SKIP
>>> store.download(ref.key, dest)                            # doctest: +SKIP
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from wisp.config import Settings
from wisp.errors import ConfigError
from wisp.store.base import (
    ObjectRef,
    ObjectStore,
    VerifiedStream,
    make_key,
    parse_key,
    sha256_file,
    validate_namespace,
)
from wisp.store.fs import FilesystemStore
from wisp.store.s3 import S3Store

__all__ = [
    "FilesystemStore",
    "ObjectRef",
    "ObjectStore",
    "S3Store",
    "VerifiedStream",
    "make_key",
    "open_store",
    "parse_key",
    "sha256_file",
    "validate_namespace",
]

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def open_store(settings: Settings) -> ObjectStore:
    """The store named by ``settings.store_url`` (``file:///abs/path`` or ``s3://bucket``).

    No network I/O happens here: the S3 bucket is created on first write or ``check()``.
    """
    url = urlparse(settings.store_url)
    if url.scheme == "file":
        if url.netloc not in ("", "localhost") or not url.path.startswith("/"):
            raise ConfigError(f"WISP_STORE_URL={settings.store_url!r} must be file:///absolute/path",
                              variable="WISP_STORE_URL")
        return FilesystemStore(Path(unquote(url.path)))
    if url.scheme == "s3":
        bucket = url.netloc
        if not _BUCKET.fullmatch(bucket) or ".." in bucket or url.path.strip("/"):
            raise ConfigError(f"WISP_STORE_URL={settings.store_url!r} must be s3://bucket with a valid "
                              "bucket name (3-63 of a-z 0-9 . -) and no path", variable="WISP_STORE_URL")
        for name in ("s3_endpoint", "s3_access_key", "s3_secret_key"):
            if not getattr(settings, name):
                raise ConfigError(f"WISP_{name.upper()} must be set for WISP_STORE_URL={settings.store_url}",
                                  variable=f"WISP_{name.upper()}")
        return S3Store(
            endpoint=str(settings.s3_endpoint), bucket=bucket, access_key=str(settings.s3_access_key),
            secret_key=str(settings.s3_secret_key), secure=settings.s3_secure, region=settings.s3_region,
        )
    raise ConfigError(f"WISP_STORE_URL={settings.store_url!r}: scheme must be file or s3",
                      variable="WISP_STORE_URL")
