"""Loading a task's inputs: database rows and local copies of their files (verified on download)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from wisp.db import session_scope, table
from wisp.errors import InvalidInput
from wisp.store import ObjectStore


@dataclass(frozen=True)
class FrameInput:
    """A raw frame: its row (with the exposure's file columns) and the local raw file."""

    row: dict[str, Any]
    path: Path

    @property
    def hdu_index(self) -> int:
        return int(self.row["hdu_index"])


@dataclass(frozen=True)
class ProductInput:
    """A product: its row and its local file."""

    row: dict[str, Any]
    path: Path


class InputLoader:
    """Fetches inputs into ``workdir``; each object is downloaded at most once per task."""

    def __init__(self, engine: Engine, store: ObjectStore, workdir: Path) -> None:
        self.engine, self.store, self.workdir = engine, store, workdir
        self._files: dict[str, Path] = {}

    def _local(self, key: str) -> Path:
        if key not in self._files:
            dest = self.workdir / key.replace("/", "_")
            self.store.download(key, dest)
            self._files[key] = dest
        return self._files[key]

    def frame(self, frame_id: str) -> FrameInput:
        frames, exposures = table("raw_frames"), table("exposures")
        with session_scope(self.engine) as s:
            row = s.execute(select(frames, exposures.c.object_key, exposures.c.filename, exposures.c.sha256,
                                   exposures.c.header.label("primary_header"))
                            .join(exposures, exposures.c.id == frames.c.exposure_id)
                            .where(frames.c.id == frame_id)).first()
        if row is None:
            raise InvalidInput(f"input raw frame {frame_id} does not exist", code="task.missing_input", id=frame_id)
        data = dict(row._mapping)
        return FrameInput(data, self._local(data["object_key"]))

    def product(self, product_id: str) -> ProductInput:
        products = table("products")
        with session_scope(self.engine) as s:
            row = s.execute(select(products).where(products.c.id == product_id)).first()
        if row is None:
            raise InvalidInput(f"input product {product_id} does not exist", code="task.missing_input",
                               id=product_id)
        data = dict(row._mapping)
        if not data["object_key"]:
            raise InvalidInput(f"input product {product_id} has no file", code="task.missing_input", id=product_id)
        return ProductInput(data, self._local(data["object_key"]))
