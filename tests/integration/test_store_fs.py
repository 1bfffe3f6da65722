"""Filesystem-only details of the store: read-only files, no temporaries, what listing skips."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from wisp.errors import ConfigError, IntegrityError
from wisp.store import FilesystemStore


@pytest.fixture
def store(tmp_path: Path) -> FilesystemStore:
    return FilesystemStore(tmp_path / "objects")


def test_objects_are_read_only_files_without_temporaries(store: FilesystemStore) -> None:
    ref = store.put_bytes(b"raw pixels", namespace="raw")
    path = store.root / ref.key
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert sorted(p.name for p in path.parent.iterdir()) == [ref.sha256]


def test_listing_skips_temporaries_and_foreign_files(store: FilesystemStore) -> None:
    ref = store.put_bytes(b"x", namespace="raw")
    (store.root / ref.key).with_name(".tmp-leftover").write_bytes(b"partial")
    (store.root / "raw" / "README").write_text("not an object")
    assert list(store.list()) == [ref]


def test_directory_at_a_key_is_an_integrity_error(store: FilesystemStore) -> None:
    data = b"y"
    ref = store.put_bytes(data, namespace="raw")
    (store.root / ref.key).unlink()
    (store.root / ref.key).mkdir()
    with pytest.raises(IntegrityError):
        store.put_bytes(data, namespace="raw")


def test_relative_root_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        FilesystemStore(Path("relative/objects"))
