"""The S3 backend (MinIO, Ceph RGW, AWS, moto) through the ``minio`` client.

The sha256 is recorded as user metadata (``x-amz-meta-sha256``). The bytes are re-hashed while they
are uploaded, and an upload whose source changed is aborted before it completes. After the upload the
server's size, recorded sha256 and ETag are checked; an ETag in an unexpected form (encryption, some
servers) falls back to reading the object back. S3 has no portable create-if-absent, so "never
overwrite" is check-then-put: a concurrent put of the same key writes the same bytes, which is harmless.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import BinaryIO

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError
from urllib3.util import Retry, Timeout

from wisp.errors import ConfigError, IntegrityError, InvalidInput, NotFound, Transient
from wisp.store.base import ObjectRef, ObjectStore, Opener, is_key, parse_key, source_changed, validate_prefix

log = logging.getLogger(__name__)

SHA_META = "x-amz-meta-sha256"
PART_SIZE = 16 * 1024 * 1024
_MISSING = {"NoSuchKey", "NoSuchObject", "NoSuchBucket", "ResourceNotFound", "NoSuchVersion"}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
_BUSY = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "XMinioServerNotInitialized"}


class _VerifyingReader:
    """Hands ``size`` bytes of ``src`` to the uploader while hashing them (sha256, MD5, per-part MD5).

    When the last byte is read and the sha256 is not the expected one, ``read`` raises, so the
    uploader aborts before the object is created (minio aborts the multipart upload).
    """

    def __init__(self, src: BinaryIO, ref: ObjectRef, part_size: int) -> None:
        self._src, self._ref, self._part_size = src, ref, part_size
        self._sha = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._part = hashlib.md5(usedforsecurity=False)
        self._part_digests: list[bytes] = []
        self._n = 0
        self._done = False

    def read(self, size: int = -1) -> bytes:
        remaining = self._ref.size - self._n
        data = self._src.read(remaining if size < 0 else min(size, remaining)) if remaining else b""
        view = memoryview(data)
        while view:
            room = self._part_size - (self._n % self._part_size)
            piece, view = view[:room], view[room:]
            self._sha.update(piece)
            self._md5.update(piece)
            self._part.update(piece)
            self._n += len(piece)
            if self._n % self._part_size == 0:
                self._part_digests.append(self._part.digest())
                self._part = hashlib.md5(usedforsecurity=False)
        if self._n == self._ref.size or not data:
            self.verify()
        return data

    def verify(self) -> None:
        """Raise IntegrityError (store.source_changed) unless exactly the expected bytes were read."""
        if self._done:
            return
        got = self._sha.hexdigest()
        if self._n != self._ref.size or got != self._ref.sha256:
            raise source_changed(self._ref, got, self._n)
        self._done = True
        if self._n % self._part_size:
            self._part_digests.append(self._part.digest())

    def expected_etag(self) -> str:
        """The ETag an MD5-ETag server reports: plain MD5, or MD5-of-part-MD5s plus '-N' if multipart."""
        if len(self._part_digests) <= 1:
            return self._md5.hexdigest()
        joined = hashlib.md5(b"".join(self._part_digests), usedforsecurity=False).hexdigest()
        return f"{joined}-{len(self._part_digests)}"


def _etag_matches(server_etag: str | None, expected: str) -> bool:
    return (server_etag or "").strip('"').lower() == expected


def parse_endpoint(endpoint: str, secure: bool) -> tuple[str, bool]:
    """``host:port`` or ``http(s)://host:port`` → (host:port, secure); ConfigError otherwise."""
    raw = endpoint.strip()
    if "://" in raw:
        scheme, _, raw = raw.partition("://")
        if scheme not in ("http", "https"):
            raise ConfigError(f"WISP_S3_ENDPOINT={endpoint!r}: scheme must be http or https",
                              variable="WISP_S3_ENDPOINT")
        secure = scheme == "https"
        raw = raw.rstrip("/")
    if not raw or "/" in raw or "?" in raw or "@" in raw:
        raise ConfigError(f"WISP_S3_ENDPOINT={endpoint!r} must be host:port (no path)",
                          variable="WISP_S3_ENDPOINT")
    return raw, secure


class S3Store(ObjectStore):
    """Objects in one bucket of an S3-compatible server; the bucket is created on first use."""

    def __init__(self, *, endpoint: str, bucket: str, access_key: str, secret_key: str,
                 secure: bool = False, region: str = "us-east-1", part_size: int = PART_SIZE,
                 connect_timeout_s: float = 2.0, read_timeout_s: float = 60.0, retries: int = 2) -> None:
        host, secure = parse_endpoint(endpoint, secure)
        self.bucket, self._part_size = bucket, part_size
        self.endpoint = f"{'https' if secure else 'http'}://{host}"
        http = urllib3.PoolManager(
            timeout=Timeout(connect=connect_timeout_s, read=read_timeout_s),
            retries=Retry(total=retries, connect=retries, read=1, status=retries, backoff_factor=0.2,
                          status_forcelist=(500, 502, 503, 504)),
            maxsize=16,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE"),
        )
        try:
            self._client = Minio(host, access_key=access_key, secret_key=secret_key, secure=secure,
                                 region=region, http_client=http)
        except ValueError as exc:
            raise ConfigError(f"invalid S3 settings for {self.endpoint}: {exc}",
                              variable="WISP_S3_ENDPOINT") from exc
        self._bucket_ready = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Store({self.endpoint!r}, bucket={self.bucket!r})"

    @contextmanager
    def _errors(self, key: str | None = None) -> Iterator[None]:
        """Map client errors: missing → NotFound, refused credentials → ConfigError, down → Transient."""
        where = f"object store {self.endpoint} (bucket {self.bucket})"
        try:
            yield
        except S3Error as exc:
            if exc.code in _MISSING:
                raise NotFound(f"object {key} not found", key=key) from None
            if exc.code in _DENIED:
                raise ConfigError(f"{where} refused the request ({exc.code}); check WISP_S3_ACCESS_KEY, "
                                  "WISP_S3_SECRET_KEY and the bucket policy", variable="WISP_S3_ACCESS_KEY",
                                  endpoint=self.endpoint) from exc
            if exc.code in _BUSY:
                raise Transient(f"{where} is busy ({exc.code})", endpoint=self.endpoint) from exc
            raise
        except ServerError as exc:
            raise Transient(f"{where} failed: {exc}", endpoint=self.endpoint) from exc
        except InvalidResponseError as exc:  # not S3's XML: a proxy or something else at that address
            status = getattr(exc, "_code", 0)
            if status >= 500 or status == 429:
                raise Transient(f"{where} failed with HTTP {status}", endpoint=self.endpoint) from exc
            raise ConfigError(f"{where} does not answer like an S3 server (HTTP {status}); check "
                              "WISP_S3_ENDPOINT", variable="WISP_S3_ENDPOINT",
                              endpoint=self.endpoint) from exc
        except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
            reason = re.sub(r"^<[^>]*>: ", "", str(getattr(exc, "reason", None) or exc))
            raise Transient(f"{where} is unavailable: {reason}", endpoint=self.endpoint) from exc

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        with self._lock, self._errors():
            if not self._client.bucket_exists(self.bucket):
                try:
                    self._client.make_bucket(self.bucket)
                except S3Error as exc:
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
            self._bucket_ready = True

    def _head(self, key: str) -> ObjectRef | None:
        parse_key(key)
        try:
            with self._errors(key):
                st = self._client.stat_object(self.bucket, key)
        except NotFound:
            return None
        return ObjectRef(key, st.metadata.get(SHA_META, "") if st.metadata else "", st.size or 0)

    def _write(self, ref: ObjectRef, opener: Opener, content_type: str) -> ObjectRef:
        self._ensure_bucket()
        with opener() as src:
            reader = _VerifyingReader(src, ref, self._part_size)
            with self._errors(ref.key):
                self._client.put_object(self.bucket, ref.key, reader, length=ref.size,  # type: ignore[arg-type]
                                        content_type=content_type, metadata={SHA_META: ref.sha256},
                                        part_size=self._part_size)
            reader.verify()
        with self._errors(ref.key):
            st = self._client.stat_object(self.bucket, ref.key)
        recorded = st.metadata.get(SHA_META, "") if st.metadata else ""
        if st.size != ref.size or recorded != ref.sha256:
            self._discard(ref, f"server reports size {st.size} and sha256 {recorded or 'none'}")
        if not _etag_matches(st.etag, reader.expected_etag()):
            log.info("ETag %s of %s is not its MD5 form %s; verifying by reading back",
                     st.etag, ref.key, reader.expected_etag())
            got = self._read_back_sha256(ref.key)
            if got != ref.sha256:
                self._discard(ref, f"read back with sha256 {got}")
        return ref

    def _read_back_sha256(self, key: str) -> str:
        chunks, close = self._open(key, 1 << 20)
        h = hashlib.sha256()
        try:
            for chunk in chunks:
                h.update(chunk)
        finally:
            close()
        return h.hexdigest()

    def _discard(self, ref: ObjectRef, why: str) -> None:
        """Remove an object this put just wrote and found wrong, then raise IntegrityError."""
        with self._errors(ref.key):
            self._client.remove_object(self.bucket, ref.key)
        raise IntegrityError(f"upload of {ref.key} did not verify ({why}); removed it", key=ref.key)

    def _open(self, key: str, chunk_size: int) -> tuple[Iterator[bytes], Callable[[], None]]:
        with self._errors(key):
            resp = self._client.get_object(self.bucket, key)
        recorded = resp.headers.get(SHA_META)
        if recorded is not None and recorded != parse_key(key):
            resp.close()
            resp.release_conn()
            raise IntegrityError(f"object {key} records sha256 {recorded}, not its key's", key=key)

        def chunks() -> Iterator[bytes]:
            with self._errors(key):
                yield from resp.stream(chunk_size)

        def close() -> None:
            resp.close()
            resp.release_conn()

        return chunks(), close

    def list(self, prefix: str = "") -> Iterator[ObjectRef]:
        """Objects whose key starts with ``prefix``, in key order; foreign keys are skipped."""
        validate_prefix(prefix)
        try:
            with self._errors():
                for obj in self._client.list_objects(self.bucket, prefix=prefix or None, recursive=True):
                    name = obj.object_name or ""
                    if is_key(name):
                        yield ObjectRef(name, parse_key(name), obj.size or 0)
        except NotFound:  # the bucket does not exist yet
            return

    def presigned_get_url(self, key: str, expires_s: int = 600) -> str | None:
        """A presigned GET URL valid for ``expires_s`` seconds (1 s to 7 days); NotFound if absent."""
        if not 1 <= expires_s <= 7 * 24 * 3600:
            raise InvalidInput(f"expires_s={expires_s} must be between 1 s and 7 days",
                               code="store.bad_expiry")
        if self._head(key) is None:
            raise NotFound(f"object {key} not found", key=key)
        with self._errors(key):
            return self._client.presigned_get_object(self.bucket, key, expires=timedelta(seconds=expires_s))

    def check(self) -> None:
        """Reach the server and make sure the bucket exists (Transient if unreachable)."""
        self._bucket_ready = False
        self._ensure_bucket()
