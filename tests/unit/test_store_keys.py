"""Pure parts of the store: keys, namespaces, prefixes, ETag arithmetic, configuration."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from wisp.config import load_settings
from wisp.errors import ConfigError, IntegrityError, InvalidInput
from wisp.store import FilesystemStore, ObjectRef, S3Store, make_key, open_store, parse_key, sha256_file
from wisp.store.base import validate_prefix
from wisp.store.s3 import _VerifyingReader, parse_endpoint

SHA = hashlib.sha256(b"x").hexdigest()


def test_key_round_trip() -> None:
    key = make_key("calib/master-flat", SHA)
    assert key == f"calib/master-flat/{SHA[:2]}/{SHA}"
    assert parse_key(key) == SHA


@pytest.mark.parametrize("prefix", ["", "raw", "raw/", "raw/ab", "calib/master-"])
def test_good_prefixes(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["/raw", "../", "raw//", "RAW", "raw/.tmp"])
def test_bad_prefixes(prefix: str) -> None:
    with pytest.raises(InvalidInput):
        validate_prefix(prefix)


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 3_000_000)
    assert sha256_file(path) == hashlib.sha256(b"x" * 3_000_000).hexdigest()


def _read_all(reader: _VerifyingReader, step: int) -> bytes:
    out = b""
    while chunk := reader.read(step):
        out += chunk
    return out


@pytest.mark.parametrize("step", [1000, 4096, 10_000])
def test_reader_etags(step: int) -> None:
    part = 4096
    data = bytes(range(256)) * 40  # 10240 bytes: parts 4096 + 4096 + 2048
    ref = ObjectRef("k", hashlib.sha256(data).hexdigest(), len(data))
    reader = _VerifyingReader(io.BytesIO(data), ref, part)
    assert _read_all(reader, step) == data
    digests = b"".join(hashlib.md5(data[i:i + part]).digest() for i in range(0, len(data), part))
    assert reader.expected_etag() == hashlib.md5(digests).hexdigest() + "-3"
    single = _VerifyingReader(io.BytesIO(data), ref, 1 << 20)
    assert _read_all(single, step) == data
    assert single.expected_etag() == hashlib.md5(data).hexdigest()


def test_reader_raises_when_source_differs() -> None:
    ref = ObjectRef("k", hashlib.sha256(b"abc").hexdigest(), 3)
    with pytest.raises(IntegrityError):
        _read_all(_VerifyingReader(io.BytesIO(b"abd"), ref, 4096), 2)
    with pytest.raises(IntegrityError):  # shorter than hashed
        _read_all(_VerifyingReader(io.BytesIO(b"ab"), ref, 4096), 2)
    grown = _VerifyingReader(io.BytesIO(b"abc and more"), ref, 4096)
    assert _read_all(grown, 100) == b"abc"  # only the hashed length is sent


@pytest.mark.parametrize(("endpoint", "secure", "expected"), [
    ("minio:9000", False, ("minio:9000", False)),
    ("http://minio:9000", True, ("minio:9000", False)),
    ("https://s3.example.org/", False, ("s3.example.org", True)),
])
def test_parse_endpoint(endpoint: str, secure: bool, expected: tuple[str, bool]) -> None:
    assert parse_endpoint(endpoint, secure) == expected


@pytest.mark.parametrize("endpoint", ["ftp://x:1", "http://x:1/path", "", "user@x:1"])
def test_bad_endpoint(endpoint: str) -> None:
    with pytest.raises(ConfigError, match="WISP_S3_ENDPOINT"):
        parse_endpoint(endpoint, False)


def _s3_env(**extra: str) -> dict[str, str]:
    env = {"WISP_STORE_URL": "s3://wisp-raw", "WISP_S3_ENDPOINT": "127.0.0.1:9",
           "WISP_S3_ACCESS_KEY": "a", "WISP_S3_SECRET_KEY": "b"}
    env.update(extra)
    return env


def test_open_store_backends_without_network(tmp_path: Path) -> None:
    fs = open_store(load_settings({"WISP_STORE_URL": (tmp_path / "o").as_uri()}))
    assert isinstance(fs, FilesystemStore) and fs.root == tmp_path / "o" and fs.root.is_dir()
    s3 = open_store(load_settings(_s3_env()))
    assert isinstance(s3, S3Store) and s3.bucket == "wisp-raw" and s3.endpoint == "http://127.0.0.1:9"


@pytest.mark.parametrize("url", ["s3://Bad_Bucket", "s3://ab", "s3://bucket/prefix", "file://host/x"])
def test_open_store_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError, match="WISP_STORE_URL"):
        open_store(load_settings(_s3_env(WISP_STORE_URL=url)))
