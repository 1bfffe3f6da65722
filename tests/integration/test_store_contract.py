"""The object-store contract, run against every backend (filesystem and S3 via moto)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from minio import Minio

import wisp.store.base as store_base
from wisp.config import load_settings
from wisp.errors import IntegrityError, InvalidInput, NotFound, Transient
from wisp.store import FilesystemStore, ObjectRef, ObjectStore, S3Store, open_store, sha256_file


@pytest.fixture(params=["fs", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """A fresh, empty store of each backend; its root directory / bucket does not exist yet."""
    if request.param == "fs":
        root = tmp_path / "objects" / "nested"
        return open_store(load_settings({"WISP_DATA_DIR": str(tmp_path), "WISP_STORE_URL": root.as_uri()}))
    return open_store(request.getfixturevalue("s3_settings"))


@dataclass
class Backdoor:
    """Access to a store's storage behind its back, to corrupt it and to look at it."""

    store: ObjectStore
    request: pytest.FixtureRequest

    def overwrite(self, key: str, data: bytes) -> None:
        """Replace the stored bytes of ``key`` (keeping any recorded sha256)."""
        if isinstance(self.store, FilesystemStore):
            path = self.store.root / key
            os.chmod(path, 0o644)
            path.write_bytes(data)
            os.chmod(path, 0o444)
        else:
            assert isinstance(self.store, S3Store)
            sha = key.rsplit("/", 1)[1]
            self.client().put_object(self.store.bucket, key, io.BytesIO(data), len(data),
                                     metadata={"x-amz-meta-sha256": sha})

    def read(self, key: str) -> bytes:
        if isinstance(self.store, FilesystemStore):
            return (self.store.root / key).read_bytes()
        assert isinstance(self.store, S3Store)
        resp = self.client().get_object(self.store.bucket, key)
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    def backing_exists(self) -> bool:
        """The root directory (fs) or the bucket (S3) exists."""
        if isinstance(self.store, FilesystemStore):
            return self.store.root.is_dir()
        assert isinstance(self.store, S3Store)
        return self.client().bucket_exists(self.store.bucket)

    def unreachable(self) -> tuple[ObjectStore, str]:
        """A store whose storage is gone (fs: root removed; S3: endpoint on a closed port)."""
        if isinstance(self.store, FilesystemStore):
            shutil.rmtree(self.store.root)
            return self.store, str(self.store.root)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        settings = replace(self.request.getfixturevalue("s3_settings"), s3_endpoint=f"127.0.0.1:{port}")
        return open_store(settings), f"127.0.0.1:{port}"

    def client(self) -> Minio:
        return self.request.getfixturevalue("s3_server").client()


@pytest.fixture
def backdoor(store: ObjectStore, request: pytest.FixtureRequest) -> Backdoor:
    return Backdoor(store, request)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- content addressing and round trips -----------------------------------------------------------------

def test_put_bytes_is_content_addressed(store: ObjectStore, backdoor: Backdoor) -> None:
    if isinstance(store, S3Store):
        assert not backdoor.backing_exists()  # created by the first write
    data = b"wisp raw frame bytes"
    ref = store.put_bytes(data, namespace="raw")
    sha = _sha(data)
    assert ref == ObjectRef(key=f"raw/{sha[:2]}/{sha}", sha256=sha, size=len(data))
    assert backdoor.backing_exists()
    assert store.stat(ref.key) == ref
    assert store.exists(ref.key)
    assert store.get_bytes(ref.key) == data
    assert store.put_bytes(data, namespace="calib/master-bias").key == f"calib/master-bias/{sha[:2]}/{sha}"


def test_put_file_download_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "frame.fits"
    src.write_bytes(os.urandom(300_000))
    ref = store.put_file(src, namespace="raw")
    assert ref.sha256 == sha256_file(src) and ref.size == 300_000
    dest = tmp_path / "out" / "copy.fits"
    dest.parent.mkdir()
    dest.write_bytes(b"old content is replaced")
    assert store.download(ref.key, dest) == ref
    assert dest.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["copy.fits"]  # no temporary left behind


def test_empty_object(store: ObjectStore, tmp_path: Path) -> None:
    ref = store.put_bytes(b"", namespace="empty")
    assert ref.size == 0 and store.stat(ref.key) == ref
    assert store.get_bytes(ref.key) == b""
    assert list(store.iter_chunks(ref.key)) == []
    assert store.download(ref.key, tmp_path / "e").size == 0


def test_iter_chunks_streams(store: ObjectStore) -> None:
    data = os.urandom(10_000)
    ref = store.put_bytes(data, namespace="raw")
    with store.iter_chunks(ref.key, chunk_size=1000) as chunks:
        parts = list(chunks)
    assert len(parts) >= 2 and all(len(p) <= 1000 for p in parts)
    assert b"".join(parts) == data


def test_large_file_multipart(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "big.fits"
    block = os.urandom(1 << 20)
    with open(src, "wb") as f:
        for i in range(40):  # 40 MiB: three 16 MiB parts on S3
            f.write(block[i:] + block[:i])
    ref = store.put_file(src, namespace="raw")
    assert ref.size == 40 << 20
    dest = tmp_path / "big-copy.fits"
    assert store.download(ref.key, dest) == ref
    assert sha256_file(dest) == ref.sha256
    assert store.put_file(src, namespace="raw") == ref


# -- validation -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("namespace", ["", "/raw", "raw/", "Raw", "raw/../x", "..", "raw//x", "raw x",
                                       "raw/./x", "raw.d", "ráw", "raw\n", "a" * 201])
def test_bad_namespace_rejected(store: ObjectStore, namespace: str) -> None:
    with pytest.raises(InvalidInput):
        store.put_bytes(b"x", namespace=namespace)


@pytest.mark.parametrize("key", ["", "../../etc/passwd", "raw", "raw/ab/" + "ab" * 31,
                                 "raw/zz/" + "ab" * 32, "raw/cd/" + "ab" * 32, "/raw/ab/" + "ab" * 32,
                                 "raw/../ab/" + "ab" * 32, "RAW/ab/" + "ab" * 32])
def test_malformed_key_rejected(store: ObjectStore, key: str, tmp_path: Path) -> None:
    for call in (store.stat, store.exists, store.get_bytes, store.iter_chunks, store.presigned_get_url,
                 lambda k: store.download(k, tmp_path / "x")):
        with pytest.raises(InvalidInput):
            call(key)


# -- never overwritten ------------------------------------------------------------------------------------

def test_second_put_is_a_noop(store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = store.put_bytes(b"same bytes", namespace="raw")

    def no_write(*args: object) -> ObjectRef:
        raise AssertionError("an existing object was written again")

    monkeypatch.setattr(store, "_write", no_write)
    assert store.put_bytes(b"same bytes", namespace="raw") == ref
    src = tmp_path / "f"
    src.write_bytes(b"same bytes")
    assert store.put_file(src, namespace="raw") == ref
    assert list(store.list()) == [ref]


def test_put_over_mismatching_object_raises_and_keeps_it(store: ObjectStore, backdoor: Backdoor) -> None:
    ref = store.put_bytes(b"original content", namespace="raw")
    backdoor.overwrite(ref.key, b"corrupted, and of another size")
    with pytest.raises(IntegrityError, match=ref.key):
        store.put_bytes(b"original content", namespace="raw")
    assert backdoor.read(ref.key) == b"corrupted, and of another size"  # not silently replaced


def test_source_changing_during_put_stores_nothing(store: ObjectStore, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "growing.fits"
    src.write_bytes(b"B" * 5000)
    stale = b"A" * 5000  # what the file held when it was hashed
    monkeypatch.setattr(store_base, "_hash_file", lambda p: (_sha(stale), len(stale)))
    with pytest.raises(IntegrityError) as err:
        store.put_file(src, namespace="raw")
    assert err.value.code == "store.source_changed"
    key = f"raw/{_sha(stale)[:2]}/{_sha(stale)}"
    assert not store.exists(key)
    assert list(store.list()) == []


# -- verified on read ---------------------------------------------------------------------------------------

def test_reads_detect_corruption(store: ObjectStore, backdoor: Backdoor, tmp_path: Path) -> None:
    data = os.urandom(5000)
    ref = store.put_bytes(data, namespace="raw")
    backdoor.overwrite(ref.key, bytes(b ^ 0xFF for b in data[:10]) + data[10:])  # same size
    with pytest.raises(IntegrityError, match=ref.key):
        store.get_bytes(ref.key)
    dest = tmp_path / "dest.fits"
    dest.write_bytes(b"previous")
    with pytest.raises(IntegrityError):
        store.download(ref.key, dest)
    assert dest.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    got = []
    with pytest.raises(IntegrityError), store.iter_chunks(ref.key, chunk_size=1000) as chunks:
        for chunk in chunks:
            got.append(chunk)
    assert len(b"".join(got)) == 5000  # streamed first, failed at the end


def test_missing_key_is_not_found(store: ObjectStore, tmp_path: Path) -> None:
    sha = _sha(b"never stored")
    key = f"raw/{sha[:2]}/{sha}"
    assert not store.exists(key)
    for call in (store.stat, store.get_bytes, store.iter_chunks, store.presigned_get_url,
                 lambda k: store.download(k, tmp_path / "x")):
        with pytest.raises(NotFound, match=key):
            call(key)
    assert not (tmp_path / "x").exists()


# -- listing, concurrency, URLs, readiness -------------------------------------------------------------------

def test_list_by_prefix_in_key_order(store: ObjectStore) -> None:
    assert list(store.list()) == []
    raw = [store.put_bytes(f"raw {i}".encode(), namespace="raw") for i in range(6)]
    calib = store.put_bytes(b"flat", namespace="calib/flat")
    other = store.put_bytes(b"raw-x", namespace="raw-x")
    everything = list(store.list())
    assert everything == sorted([*raw, calib, other], key=lambda r: r.key)
    assert list(store.list("raw/")) == sorted(raw, key=lambda r: r.key)
    fan = raw[0].key[:6]  # "raw/xy"
    assert list(store.list(fan)) == sorted([r for r in raw if r.key.startswith(fan)], key=lambda r: r.key)
    assert list(store.list("calib")) == [calib]
    assert list(store.list("nothing/")) == []
    with pytest.raises(InvalidInput):
        list(store.list("../"))


def test_concurrent_puts_of_same_content(store: ObjectStore) -> None:
    data = os.urandom(2 << 20)
    barrier = threading.Barrier(4)
    results: list[ObjectRef | BaseException] = []

    def put() -> None:
        barrier.wait()
        try:
            results.append(store.put_bytes(data, namespace="raw"))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=put) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(isinstance(r, ObjectRef) for r in results), results
    ref = results[0]
    assert isinstance(ref, ObjectRef) and set(results) == {ref}
    assert list(store.list()) == [ref]
    assert store.get_bytes(ref.key) == data


def test_presigned_get(store: ObjectStore) -> None:
    data = b"pixels for a browser"
    ref = store.put_bytes(data, namespace="coadd")
    url = store.presigned_get_url(ref.key, expires_s=60)
    if isinstance(store, FilesystemStore):
        assert url is None
        return
    assert url is not None
    resp = httpx.get(url, timeout=10)
    assert resp.status_code == 200 and resp.content == data


def test_check_creates_backing_storage(store: ObjectStore, backdoor: Backdoor) -> None:
    store.check()
    assert backdoor.backing_exists()
    store.check()


def test_unreachable_storage_is_transient_and_prompt(store: ObjectStore, backdoor: Backdoor) -> None:
    dead, where = backdoor.unreachable()
    calls: list[Callable[[], object]] = [dead.check, lambda: dead.put_bytes(b"x", namespace="raw")]
    if isinstance(dead, S3Store):
        sha = _sha(b"x")
        calls += [lambda: dead.get_bytes(f"raw/{sha[:2]}/{sha}"), lambda: list(dead.list())]
    for call in calls:
        start = time.monotonic()
        with pytest.raises(Transient, match=re.escape(where)):
            call()
        assert time.monotonic() - start < 5
