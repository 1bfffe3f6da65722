"""The one error taxonomy of Wisp.

Every failure that crosses a boundary (bus, gRPC, HTTP, CLI) is a :class:`WispError` with a stable
dotted ``code`` (clients switch on it), a human sentence (``message``) and structured ``details``
(file, HDU, keyword, expected, ...). The class says what the system does about it:

* :class:`InvalidInput` – the input itself is wrong; retrying cannot help. The bus terminates the
  message and records the reason; HTTP answers 4xx; ingest quarantines the file.
* :class:`NotFound` – an id that does not exist (HTTP 404).
* :class:`Transient` – a store, database or bus is unavailable; retry later (bus: nak with backoff,
  HTTP 503).
* any other exception is a bug: the bus terminates and writes a dead-letter row, HTTP answers 500 with
  no internals.
"""

from __future__ import annotations

from typing import Any


class WispError(Exception):
    """Base of every error Wisp reports on purpose."""

    code: str = "wisp.error"
    http_status: int = 500

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = {k: v for k, v in details.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description: code, message and details."""
        return {"code": self.code, "message": self.message, "details": dict(self.details)}

    def __str__(self) -> str:
        return self.message


class InvalidInput(WispError):
    """The input is wrong and retrying will not help (corrupt file, missing keyword, bad id format)."""

    code = "input.invalid"
    http_status = 422


class BadRequest(InvalidInput):
    """A malformed request (bad id, bad query parameter), as opposed to bad content (HTTP 400)."""

    code = "request.invalid"
    http_status = 400


class PayloadTooLarge(InvalidInput):
    """An upload or an array is larger than the configured limit."""

    code = "input.too_large"
    http_status = 413


class NotFound(WispError):
    """A requested id or object does not exist."""

    code = "not_found"
    http_status = 404


class Conflict(WispError):
    """The request contradicts what is stored (e.g. an object key with different content)."""

    code = "conflict"
    http_status = 409


class IntegrityError(WispError):
    """Stored bytes do not match their recorded checksum: never silently accepted."""

    code = "store.integrity"
    http_status = 500


class Transient(WispError):
    """A dependency (store, database, bus, service) is unavailable; the same call may succeed later."""

    code = "unavailable"
    http_status = 503


class ConfigError(WispError):
    """Configuration is missing or invalid; the message names the variable or file."""

    code = "config.invalid"
    http_status = 500
