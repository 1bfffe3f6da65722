"""The local-filesystem backend: one read-only file per object under a root directory.

A put writes a temporary file in the object's directory, fsyncs it, checks its size and sha256, makes
it read-only and hard-links it into place. ``link`` fails if the name exists, so a put never replaces
an object, and two concurrent puts of the same content leave one file. Temporary names start with "."
and never collide with keys. The content type is not kept (files carry none).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from wisp.errors import ConfigError, IntegrityError, NotFound, Transient
from wisp.store.base import (
    CHUNK,
    ObjectRef,
    ObjectStore,
    Opener,
    fsync_dir,
    is_key,
    parse_key,
    source_changed,
    validate_prefix,
)

_NO_LINK = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}


class FilesystemStore(ObjectStore):
    """Objects as files under ``root`` (created if missing); no presigned URLs."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.is_absolute():
            raise ConfigError(f"filesystem store root {root} must be an absolute path",
                              variable="WISP_STORE_URL")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create filesystem store root {self.root}: {exc.strerror}",
                              variable="WISP_STORE_URL") from exc

    def __repr__(self) -> str:
        return f"FilesystemStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        parse_key(key)
        return self.root / key

    def _require_root(self) -> None:
        if not self.root.is_dir():
            raise Transient(f"filesystem store root {self.root} is missing (unmounted?)", path=str(self.root))

    def _head(self, key: str) -> ObjectRef | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            raise IntegrityError(f"object {key} is not a regular file", key=key)
        return ObjectRef(key, parse_key(key), st.st_size)

    def _write(self, ref: ObjectRef, opener: Opener, content_type: str) -> ObjectRef:
        self._require_root()
        final = self._path(ref.key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{uuid.uuid4().hex}"
        try:
            h, n = hashlib.sha256(), 0
            with opener() as src, open(tmp, "xb") as out:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    n += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
                written = os.fstat(out.fileno()).st_size
            if h.hexdigest() != ref.sha256 or n != ref.size:
                raise source_changed(ref, h.hexdigest(), n)
            if written != ref.size:
                raise IntegrityError(f"short write of {ref.key}: {written} of {ref.size} bytes", key=ref.key)
            os.chmod(tmp, 0o444)
            if not self._link(tmp, final):
                existing = self._head(ref.key)
                if existing is None:  # vanished between link and head: cannot happen without deletes
                    raise IntegrityError(f"object {ref.key} disappeared while being stored", key=ref.key)
                return self._same_or_raise(ref, existing)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(final.parent)
        return ref

    @staticmethod
    def _link(tmp: Path, final: Path) -> bool:
        """Publish ``tmp`` as ``final`` unless it exists; False if it already existed."""
        try:
            os.link(tmp, final)
            return True
        except FileExistsError:
            return False
        except OSError as exc:  # no hard links here: rename, with a (racy) existence check
            if exc.errno not in _NO_LINK:
                raise
            if final.exists():
                return False
            os.rename(tmp, final)
            return True

    def _open(self, key: str, chunk_size: int) -> tuple[Iterator[bytes], Callable[[], None]]:
        try:
            f = open(self._path(key), "rb")  # noqa: SIM115 - closed by the VerifiedStream
        except FileNotFoundError:
            raise NotFound(f"object {key} not found", key=key) from None
        return iter(lambda: f.read(chunk_size), b""), f.close

    def list(self, prefix: str = "") -> Iterator[ObjectRef]:
        """Objects whose key starts with ``prefix``, in lexicographic key order."""
        validate_prefix(prefix)
        base = prefix.rpartition("/")[0]
        start = self.root / base if base else self.root
        if start.is_dir():
            yield from self._walk(start, base, prefix)

    def _walk(self, directory: Path, rel: str, prefix: str) -> Iterator[ObjectRef]:
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return
        # sort as the keys sort: a directory "x" stands for the keys "x/..."
        entries.sort(key=lambda e: e.name + ("/" if e.is_dir(follow_symlinks=False) else ""))
        for entry in entries:
            if entry.name.startswith("."):
                continue
            key = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_dir(follow_symlinks=False):
                if key.startswith(prefix) or prefix.startswith(key + "/"):
                    yield from self._walk(Path(entry.path), key, prefix)
            elif key.startswith(prefix) and is_key(key):
                try:
                    yield ObjectRef(key, parse_key(key), entry.stat(follow_symlinks=False).st_size)
                except FileNotFoundError:
                    continue

    def presigned_get_url(self, key: str, expires_s: int = 600) -> str | None:
        """Always None (objects are streamed); NotFound if ``key`` is absent."""
        if self._head(key) is None:
            raise NotFound(f"object {key} not found", key=key)
        return None

    def check(self) -> None:
        """Transient if the root is missing or not writable."""
        self._require_root()
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise Transient(f"filesystem store root {self.root} is not writable", path=str(self.root))
