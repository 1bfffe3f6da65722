"""One QC run, without the bus: product row -> local copy of its file -> metrics -> thresholds -> rows.

:meth:`QcRunner.run` is synchronous (the service calls it with ``asyncio.to_thread``) and can be called
directly, e.g. by tests or a re-QC command. Errors: a product that does not exist or has no file is
``InvalidInput``; an unavailable store or database is ``Transient`` (raised by them); an unreadable file
or one that breaks the product contract raises whatever it raises — a bug, dead-lettered by the bus.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from astropy.io import fits
from sqlalchemy.engine import Engine

from services.qc.records import QcOutcome, load_product, record_qc
from services.qc.science.metrics import FILE_KINDS, compute_metrics, refcat_metrics
from wisp.db import session_scope
from wisp.db.types import utcnow
from wisp.errors import InvalidInput
from wisp.instruments import InstrumentDescription, InstrumentRegistry
from wisp.quality import thresholds_for
from wisp.store import ObjectStore

log = logging.getLogger(__name__)


def description_name(instrument: str | None) -> str | None:
    """The description name of a camera id: ``generic:orion-ssdsi`` -> ``generic``, ``simcam`` -> ``simcam``."""
    return instrument.split(":", 1)[0] if instrument else None


class QcRunner:
    """Measures and judges products; thresholds come from ``registry`` (the instrument descriptions)."""

    def __init__(self, engine: Engine, store: ObjectStore, registry: InstrumentRegistry, tmp_root: Path) -> None:
        self.engine, self.store, self.registry, self.tmp_root = engine, store, registry, Path(tmp_root)

    def description(self, instrument: str | None) -> InstrumentDescription | None:
        """The description of a product's camera, or None (not tied to a camera, or no longer described:
        then only the default thresholds apply)."""
        name = description_name(instrument)
        if name is None:
            return None
        found = self.registry.descriptions.get(name)
        if found is None:
            log.warning("no instrument description %r for camera %r: default QC thresholds", name, instrument)
        return found

    def measure(self, kind: str, object_key: str | None, row_metrics: dict[str, Any],
                desc: InstrumentDescription | None, product_id: str) -> dict[str, Any]:
        """The QC metrics of one product (empty for kinds QC does not know)."""
        if kind == "refcat":
            return dict(refcat_metrics(row_metrics))
        if kind not in FILE_KINDS:
            log.info("no QC metrics for product kind %r", kind, extra={"product_id": product_id})
            return {}
        if not object_key:
            raise InvalidInput(f"{kind} product {product_id} has no file to check", code="qc.no_file",
                               id=product_id, kind=kind)
        self.tmp_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.tmp_root) as tmp:
            path = Path(tmp) / "product.fits"
            self.store.download(object_key, path)
            with fits.open(path, memmap=False) as hdul:
                return dict(compute_metrics(kind, hdul, pixel_scale_arcsec=desc.pixel_scale if desc else None))

    def run(self, product_id: str) -> QcOutcome:
        """QC one product: measure, judge, record (one transaction). Safe to repeat."""
        started = utcnow()
        row = load_product(self.engine, product_id)
        desc = self.description(row.instrument)
        measured = self.measure(row.kind, row.object_key, row.metrics, desc, product_id)
        thresholds = desc.qc_thresholds(row.kind, row.filter) if desc else thresholds_for(row.kind, None, row.filter)
        params = {"kind": row.kind, "description": desc.name if desc else None, "filter": row.filter,
                  "metrics": sorted(measured)}
        with session_scope(self.engine) as session:
            outcome = record_qc(session, product_id, measured, thresholds, params, started)
        log.info("checked", extra={"product_id": product_id, "kind": row.kind, "quality_flags": outcome.flags,
                                   "reasons": outcome.reasons, "changed": outcome.changed})
        return outcome
