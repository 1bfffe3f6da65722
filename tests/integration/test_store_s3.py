"""S3-only details of the store: metadata, ETag checks and their fallback, aborted uploads."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import wisp.store.base as store_base
import wisp.store.s3 as s3mod
from tests.fixtures.s3 import S3Server
from wisp.config import Settings
from wisp.errors import ConfigError, IntegrityError, InvalidInput, Transient
from wisp.store import S3Store, open_store


@pytest.fixture
def store(s3_settings: Settings) -> S3Store:
    store = open_store(s3_settings)
    assert isinstance(store, S3Store)
    return store


def _small_part_store(s3_settings: Settings) -> S3Store:
    return S3Store(endpoint=str(s3_settings.s3_endpoint), bucket=s3_settings.store_url[5:],
                   access_key=str(s3_settings.s3_access_key), secret_key=str(s3_settings.s3_secret_key),
                   part_size=5 << 20)


def test_records_sha256_content_type_and_md5_etag(store: S3Store, s3_server: S3Server) -> None:
    data = b"a small frame"
    ref = store.put_bytes(data, namespace="raw", content_type="application/fits")
    st = s3_server.client().stat_object(store.bucket, ref.key)
    assert st.metadata is not None and st.metadata["x-amz-meta-sha256"] == ref.sha256
    assert st.content_type == "application/fits"
    assert st.etag == hashlib.md5(data).hexdigest()


def test_multipart_etag_form(s3_settings: Settings, s3_server: S3Server,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    store = _small_part_store(s3_settings)
    reads: list[str] = []

    def read_back(key: str) -> str:
        reads.append(key)
        return ""

    monkeypatch.setattr(store, "_read_back_sha256", read_back)
    data = os.urandom(11 << 20)  # three 5 MiB parts
    ref = store.put_bytes(data, namespace="raw")
    etag = s3_server.client().stat_object(store.bucket, ref.key).etag
    assert etag is not None and etag.endswith("-3")
    assert reads == []  # the ETag verified the upload; no read-back


def test_unrecognised_etag_is_verified_by_reading_back(store: S3Store,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3mod, "_etag_matches", lambda etag, expected: False)
    reads: list[str] = []
    real = store._read_back_sha256

    def spy(key: str) -> str:
        reads.append(key)
        return real(key)

    monkeypatch.setattr(store, "_read_back_sha256", spy)
    ref = store.put_bytes(b"encrypted servers have other ETags", namespace="raw")
    assert reads == [ref.key]
    assert store.get_bytes(ref.key) == b"encrypted servers have other ETags"


def test_failed_read_back_removes_the_new_object(store: S3Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3mod, "_etag_matches", lambda etag, expected: False)
    monkeypatch.setattr(store, "_read_back_sha256", lambda key: "0" * 64)
    with pytest.raises(IntegrityError, match="did not verify"):
        store.put_bytes(b"lost in transit", namespace="raw")
    assert list(store.list()) == []


def test_source_change_aborts_a_multipart_upload(s3_settings: Settings, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    store = _small_part_store(s3_settings)
    stale = os.urandom(11 << 20)
    src = tmp_path / "changed.fits"
    src.write_bytes(stale[:-1] + bytes([stale[-1] ^ 1]))  # last byte differs: detected after all parts
    sha = hashlib.sha256(stale).hexdigest()
    monkeypatch.setattr(store_base, "_hash_file", lambda p: (sha, len(stale)))
    with pytest.raises(IntegrityError) as err:
        store.put_file(src, namespace="raw")
    assert err.value.code == "store.source_changed"
    assert list(store.list()) == []


def test_object_without_recorded_sha_is_not_accepted(store: S3Store, s3_server: S3Server) -> None:
    data = b"written by someone else"
    sha = hashlib.sha256(data).hexdigest()
    key = f"raw/{sha[:2]}/{sha}"
    s3_server.client().make_bucket(store.bucket)
    s3_server.client().put_object(store.bucket, key, io.BytesIO(data), len(data))
    with pytest.raises(IntegrityError):
        store.stat(key)
    with pytest.raises(IntegrityError):
        store.put_bytes(data, namespace="raw")
    assert store.get_bytes(key) == data  # the content itself is still verifiable


def test_recorded_sha_mismatch_fails_reads_at_once(store: S3Store, s3_server: S3Server) -> None:
    ref = store.put_bytes(b"frame", namespace="raw")
    s3_server.client().put_object(store.bucket, ref.key, io.BytesIO(b"frame"), 5,
                                  metadata={"x-amz-meta-sha256": "f" * 64})
    with pytest.raises(IntegrityError, match="records sha256"):
        store.iter_chunks(ref.key)


def test_foreign_keys_are_not_listed(store: S3Store, s3_server: S3Server) -> None:
    ref = store.put_bytes(b"x", namespace="raw")
    s3_server.client().put_object(store.bucket, "raw/readme.txt", io.BytesIO(b"hi"), 2)
    assert list(store.list()) == [ref]


def test_presigned_expiry_is_bounded(store: S3Store) -> None:
    ref = store.put_bytes(b"x", namespace="raw")
    for bad in (0, 8 * 24 * 3600):
        with pytest.raises(InvalidInput):
            store.presigned_get_url(ref.key, expires_s=bad)


class _NotS3(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        status = int(self.path.rsplit("/", 1)[-1][:3]) if "/5" in self.path else 404
        body = b"<html>not here</html>"
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def not_s3() -> Iterator[str]:
    """An HTTP server that answers HTML, like a proxy or a web server at the wrong address."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotS3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


def test_html_answers_are_config_or_transient_errors(not_s3: str) -> None:
    store = S3Store(endpoint=not_s3, bucket="bucket", access_key="a", secret_key="b", retries=0)
    with pytest.raises(ConfigError, match="WISP_S3_ENDPOINT"):
        store.get_bytes(f"raw/ab/{'ab' * 32}")
    sha = "50" + "3" * 62  # the handler answers 503 for paths containing "/5"
    with pytest.raises(Transient, match="503"):
        store.get_bytes(f"raw/50/{sha}")
