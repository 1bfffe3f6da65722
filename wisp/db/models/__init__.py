"""Every Wisp table, importable from one place (importing this module fills ``Base.metadata``)."""

from wisp.db.models.access import Membership, Project, User
from wisp.db.models.frames import Exposure, IngestedFile, RawFrame
from wisp.db.models.instruments import Chip, Filter, Instrument
from wisp.db.models.ops import DeadLetter, Job, OutboxMessage, Quarantine
from wisp.db.models.products import Activity, CalibSelection, LineageEdge, Product, Source

__all__ = [
    "Activity",
    "CalibSelection",
    "Chip",
    "DeadLetter",
    "Exposure",
    "Filter",
    "IngestedFile",
    "Instrument",
    "Job",
    "LineageEdge",
    "Membership",
    "OutboxMessage",
    "Product",
    "Project",
    "Quarantine",
    "RawFrame",
    "Source",
    "User",
]
