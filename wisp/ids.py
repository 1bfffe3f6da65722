"""Deterministic identifiers: the same inputs always give the same id (DESIGN.md §5)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

_ID_RE = re.compile(r"^[a-z]{2,8}-[0-9a-f]{24}$")


def make_id(prefix: str, *parts: Any) -> str:
    """``prefix-<24 hex>`` from a sha256 of the JSON-serialised parts (order matters)."""
    payload = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return f"{prefix}-{hashlib.sha256(payload.encode()).hexdigest()[:24]}"


def exposure_id(file_sha256: str) -> str:
    """An exposure is identified by the checksum of its raw file."""
    return make_id("exp", file_sha256)


def raw_frame_id(file_sha256: str, hdu_index: int) -> str:
    """One raw frame per chip: the file checksum and the HDU that holds the chip."""
    return make_id("raw", file_sha256, hdu_index)


def is_valid_id(value: str, prefix: str | None = None) -> bool:
    """True when ``value`` has the form of a Wisp id (and the given prefix, if any)."""
    return bool(_ID_RE.match(value)) and (prefix is None or value.startswith(prefix + "-"))
