"""Every Wisp table, importable from one place (importing this module fills ``Base.metadata``)."""

from wisp.db.models.access import Membership, Project, User
from wisp.db.models.frames import Exposure, IngestedFile, RawFrame
from wisp.db.models.instruments import Chip, Filter, Instrument
from wisp.db.models.ops import DeadLetter, OutboxMessage, Quarantine
from wisp.db.models.products import Activity, LineageEdge, Product

__all__ = [
    "Activity",
    "Chip",
    "DeadLetter",
    "Exposure",
    "Filter",
    "IngestedFile",
    "Instrument",
    "LineageEdge",
    "Membership",
    "OutboxMessage",
    "Product",
    "Project",
    "Quarantine",
    "RawFrame",
    "User",
]
