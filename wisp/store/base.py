"""The object-store contract: content-addressed, verified on write and on read, never overwritten.

An object's key is ``f"{namespace}/{sha[:2]}/{sha}"`` where ``sha`` is the hex sha256 of its bytes, so a
key names its content and two puts of the same bytes name the same object. Backends implement a few
primitives (``_head``, ``_write``, ``_open``, ...); the verification rules live here, once.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from wisp.errors import IntegrityError, InvalidInput, NotFound, Transient

CHUNK = 1 << 20
PUT_ATTEMPTS = 3  # writes tried before a server error is reported as Transient
_NAMESPACE = re.compile(r"[a-z0-9-]+(?:/[a-z0-9-]+)*")
_KEY = re.compile(r"(?P<ns>[a-z0-9-]+(?:/[a-z0-9-]+)*)/(?P<fan>[0-9a-f]{2})/(?P<sha>[0-9a-f]{64})")
_PREFIX = re.compile(r"[a-z0-9/-]*")
MAX_NAMESPACE_LEN = 200

Opener = Callable[[], BinaryIO]


@dataclass(frozen=True)
class ObjectRef:
    """A stored object: its key, the hex sha256 of its bytes and its size in bytes."""

    key: str
    sha256: str
    size: int


def validate_namespace(namespace: str) -> str:
    """Return ``namespace`` if it is lowercase ``[a-z0-9-]+`` segments joined by ``/``; else InvalidInput."""
    if (not isinstance(namespace, str) or len(namespace) > MAX_NAMESPACE_LEN
            or not _NAMESPACE.fullmatch(namespace)):
        raise InvalidInput(
            f"invalid store namespace {namespace!r}: use lowercase [a-z0-9-]+ segments separated by '/'",
            code="store.bad_namespace", namespace=str(namespace),
        )
    return namespace


def make_key(namespace: str, sha256: str) -> str:
    """The key of the object with content hash ``sha256`` in ``namespace``."""
    return f"{validate_namespace(namespace)}/{sha256[:2]}/{sha256}"


def parse_key(key: str) -> str:
    """Validate a key and return the sha256 it names; InvalidInput if it is not a store key."""
    m = _KEY.fullmatch(key) if isinstance(key, str) else None
    if m is None or m["fan"] != m["sha"][:2] or len(m["ns"]) > MAX_NAMESPACE_LEN:
        raise InvalidInput(f"{key!r} is not an object-store key (namespace/xx/sha256)",
                           code="store.bad_key", key=str(key))
    return m["sha"]


def is_key(key: str) -> bool:
    """True if ``key`` has the form of a store key (used to skip foreign objects when listing)."""
    m = _KEY.fullmatch(key)
    return m is not None and m["fan"] == m["sha"][:2]


def validate_prefix(prefix: str) -> str:
    """A listing prefix: a leading part of a key (lowercase, digits, '-', '/'), not starting with '/'."""
    if not _PREFIX.fullmatch(prefix) or prefix.startswith("/") or "//" in prefix:
        raise InvalidInput(f"invalid listing prefix {prefix!r}", code="store.bad_prefix", prefix=prefix)
    return prefix


def _hash_file(path: Path) -> tuple[str, int]:
    """(sha256 hex, size) of a file, read in chunks."""
    h, n = hashlib.sha256(), 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                n += len(chunk)
    except FileNotFoundError:
        raise NotFound(f"source file {path} does not exist", code="store.no_source", path=str(path)) from None
    return h.hexdigest(), n


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    return _hash_file(path)[0]


def source_changed(ref: ObjectRef, sha: str, size: int) -> IntegrityError:
    """The error for a source whose bytes changed between hashing and storing."""
    return IntegrityError(
        f"source of {ref.key} changed while being stored (read {size} bytes with sha256 {sha}, "
        f"expected {ref.size} bytes); nothing was stored",
        code="store.source_changed", key=ref.key,
    )


class VerifiedStream(Iterator[bytes]):
    """Chunks of an object; raises IntegrityError after the last chunk if the sha256 does not match.

    Usable as a context manager so that an abandoned stream releases its file or connection.
    """

    def __init__(self, key: str, sha256: str, chunks: Iterator[bytes], close: Callable[[], None]) -> None:
        self.key, self._sha, self._chunks, self._close = key, sha256, chunks, close
        self._hash = hashlib.sha256()
        self.size = 0
        self._closed = False

    def __iter__(self) -> VerifiedStream:
        return self

    def __next__(self) -> bytes:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self.close()
            got = self._hash.hexdigest()
            if got != self._sha:
                raise IntegrityError(
                    f"object {self.key} is corrupt: its {self.size} bytes have sha256 {got}",
                    key=self.key, actual_sha256=got,
                ) from None
            raise
        except BaseException:
            self.close()
            raise
        self._hash.update(chunk)
        self.size += len(chunk)
        return chunk

    def close(self) -> None:
        """Release the underlying file or connection (idempotent)."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> VerifiedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fsync_dir(path: Path) -> None:
    """Make a rename/link in ``path`` durable (best effort where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ObjectStore(ABC):
    """A content-addressed, verified, write-once object store (see the module docstring)."""

    # -- writing -------------------------------------------------------------------------------------
    def put_file(self, path: Path, *, namespace: str, content_type: str = "application/fits") -> ObjectRef:
        """Store a file's bytes; a no-op (returning the existing ref) if that content is already stored."""
        validate_namespace(namespace)
        sha, size = _hash_file(Path(path))
        ref = ObjectRef(make_key(namespace, sha), sha, size)
        return self._put(ref, lambda: open(path, "rb"), content_type)

    def put_bytes(self, data: bytes, *, namespace: str,
                  content_type: str = "application/octet-stream") -> ObjectRef:
        """Store ``data``; a no-op (returning the existing ref) if that content is already stored."""
        validate_namespace(namespace)
        sha = hashlib.sha256(data).hexdigest()
        ref = ObjectRef(make_key(namespace, sha), sha, len(data))
        return self._put(ref, lambda: io.BytesIO(data), content_type)

    def _put(self, ref: ObjectRef, opener: Opener, content_type: str) -> ObjectRef:
        """Write unless present; a server error during the write is retried (a streamed body cannot be
        retried by the HTTP layer), and a concurrent writer of the same content counts as success."""
        for attempt in range(PUT_ATTEMPTS):
            existing = self._head(ref.key)
            if existing is not None:
                return self._same_or_raise(ref, existing)
            try:
                return self._write(ref, opener, content_type)
            except Transient:
                if attempt == PUT_ATTEMPTS - 1:
                    raise
                time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    @staticmethod
    def _same_or_raise(ref: ObjectRef, existing: ObjectRef) -> ObjectRef:
        """An existing object may stand for ``ref`` only if its size and recorded sha256 match."""
        if existing.size != ref.size or existing.sha256 != ref.sha256:
            raise IntegrityError(
                f"object {ref.key} already exists but does not match its key (stored size {existing.size}, "
                f"recorded sha256 {existing.sha256 or 'none'}; expected size {ref.size}); not replaced",
                key=ref.key, stored_size=existing.size, expected_size=ref.size,
            )
        return ref

    # -- reading -------------------------------------------------------------------------------------
    def iter_chunks(self, key: str, chunk_size: int = CHUNK) -> VerifiedStream:
        """Stream an object; NotFound at once if absent, IntegrityError after the last chunk if corrupt."""
        sha = parse_key(key)
        chunks, close = self._open(key, max(1, chunk_size))
        return VerifiedStream(key, sha, chunks, close)

    def get_bytes(self, key: str) -> bytes:
        """The whole object, verified against its sha256."""
        with self.iter_chunks(key) as stream:
            return b"".join(stream)

    def download(self, key: str, dest: Path) -> ObjectRef:
        """Write the object to ``dest`` atomically; ``dest`` is only replaced if the sha256 matches."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self.iter_chunks(key) as stream:
            tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex}"
            try:
                with open(tmp, "xb") as out:
                    for chunk in stream:
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
        fsync_dir(dest.parent)
        return ObjectRef(key, parse_key(key), stream.size)

    def stat(self, key: str) -> ObjectRef:
        """Size and sha256 of an object (not re-hashed); NotFound if absent."""
        sha = parse_key(key)
        head = self._head(key)
        if head is None:
            raise NotFound(f"object {key} not found", key=key)
        if head.sha256 != sha:
            raise IntegrityError(f"object {key} records sha256 {head.sha256 or 'none'}, not its key's",
                                 key=key)
        return head

    def exists(self, key: str) -> bool:
        """True if an object is stored under ``key``."""
        parse_key(key)
        return self._head(key) is not None

    # -- backend primitives --------------------------------------------------------------------------
    @abstractmethod
    def _head(self, key: str) -> ObjectRef | None:
        """The stored size and *recorded* sha256 ('' if none) of ``key``, or None if absent."""

    @abstractmethod
    def _write(self, ref: ObjectRef, opener: Opener, content_type: str) -> ObjectRef:
        """Store the bytes from ``opener()`` under ``ref.key``, verifying them against ``ref``."""

    @abstractmethod
    def _open(self, key: str, chunk_size: int) -> tuple[Iterator[bytes], Callable[[], None]]:
        """Raw chunks of ``key`` and a function releasing them; NotFound at once if absent."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectRef]:
        """Objects whose key starts with ``prefix``, in key order (sizes as stored, not re-hashed)."""

    @abstractmethod
    def presigned_get_url(self, key: str, expires_s: int = 600) -> str | None:
        """A short-lived GET URL for ``key`` (None where the backend has none); NotFound if absent."""

    @abstractmethod
    def check(self) -> None:
        """Readiness probe: return if the store is usable, raise Transient if not."""
