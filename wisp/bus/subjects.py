"""Subject names of the Wisp bus, built in one place.

Events live under ``wisp.evt.>`` (stream ``WISP_EVENTS``), commands under ``wisp.cmd.>`` (stream
``WISP_COMMANDS``). Variable parts (instrument names) become one NATS token: lower case, characters
outside ``[a-z0-9_-]`` replaced by ``_``.
"""

from __future__ import annotations

import re

from wisp.errors import InvalidInput

EVENTS_PREFIX = "wisp.evt"
COMMANDS_PREFIX = "wisp.cmd"

FRAME_INGESTED = f"{EVENTS_PREFIX}.frame.ingested"
EXPOSURE_INGESTED = f"{EVENTS_PREFIX}.exposure.ingested"
#: IngestRejected events (no variable part).
INGEST_REJECTED = f"{EVENTS_PREFIX}.ingest.rejected"
#: IngestFile commands.
INGEST_FILE = f"{COMMANDS_PREFIX}.ingest.file"

#: Filters matching every instrument.
ALL_FRAMES_INGESTED = f"{FRAME_INGESTED}.*"
ALL_EXPOSURES_INGESTED = f"{EXPOSURE_INGESTED}.*"

#: ProductCreated events, and the filter matching every kind of product.
PRODUCT_CREATED = f"{EVENTS_PREFIX}.product.created"
ALL_PRODUCTS_CREATED = f"{PRODUCT_CREATED}.*"
#: ProductInvalidated events: a user marked a product bad, its derived products are outdated.
PRODUCT_INVALIDATED = f"{EVENTS_PREFIX}.product.invalidated"

#: The protobuf message (full name) each subject family carries: the contract in one table.
MESSAGE_TYPES: dict[str, str] = {
    PRODUCT_CREATED: "wisp.v1.ProductCreated",
    PRODUCT_INVALIDATED: "wisp.v1.ProductInvalidated",
    FRAME_INGESTED: "wisp.v1.FrameIngested",
    EXPOSURE_INGESTED: "wisp.v1.ExposureIngested",
    INGEST_REJECTED: "wisp.v1.IngestRejected",
    INGEST_FILE: "wisp.v1.IngestFile",
}

_UNSAFE = re.compile(r"[^a-z0-9_-]+")
_MAX_TOKEN = 64


def token(name: str) -> str:
    """One safe subject token for ``name`` (e.g. ``"Mega Cam/2"`` -> ``"mega_cam_2"``).

    Raises :class:`InvalidInput` (code ``bus.subject_token``) when nothing usable is left.
    """
    cleaned = _UNSAFE.sub("_", name.strip().lower()).strip("_")[:_MAX_TOKEN]
    if not cleaned:
        raise InvalidInput(f"{name!r} cannot be used in a subject name", code="bus.subject_token", name=name)
    return cleaned


def message_type_for(subject: str) -> str | None:
    """Full protobuf name of the message carried on ``subject``, or None for an unknown subject."""
    for base, name in MESSAGE_TYPES.items():
        if subject == base or subject.startswith(base + "."):
            return name
    return None


def frame_ingested_subject(instrument: str) -> str:
    """``wisp.evt.frame.ingested.<instrument>`` for FrameIngested events."""
    return f"{FRAME_INGESTED}.{token(instrument)}"


def exposure_ingested_subject(instrument: str) -> str:
    """``wisp.evt.exposure.ingested.<instrument>`` for ExposureIngested events."""
    return f"{EXPOSURE_INGESTED}.{token(instrument)}"


def ingest_rejected_subject() -> str:
    """``wisp.evt.ingest.rejected`` for IngestRejected events."""
    return INGEST_REJECTED


def ingest_file_subject() -> str:
    """``wisp.cmd.ingest.file`` for IngestFile commands."""
    return INGEST_FILE


def product_created_subject(kind: str) -> str:
    """``wisp.evt.product.created.<kind>`` for ProductCreated events."""
    return f"{PRODUCT_CREATED}.{token(kind)}"


def product_invalidated_subject(kind: str) -> str:
    """``wisp.evt.product.invalidated.<kind>`` for ProductInvalidated events."""
    return f"{PRODUCT_INVALIDATED}.{token(kind)}"


def make_product_msg_id(product_id: str) -> str:
    """``Nats-Msg-Id`` of the MakeProduct command for ``product_id`` (distinct from its ProductCreated event's,
    which is the product id: both may sit in the one outbox table)."""
    return f"make-{product_id}"


def make_product_subject(service: str, stage: str) -> str:
    """``wisp.cmd.<service>.<stage>`` for MakeProduct commands (the owning service's work queue)."""
    return f"{COMMANDS_PREFIX}.{token(service)}.{token(stage)}"
