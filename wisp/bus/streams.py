"""Declarative JetStream streams of Wisp, declared idempotently by every service at start-up."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from nats.js import JetStreamContext
from nats.js import errors as js_errors
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from wisp.bus._nats_errors import TRANSIENT_NATS_ERRORS, is_refusal
from wisp.bus.subjects import COMMANDS_PREFIX, EVENTS_PREFIX
from wisp.errors import ConfigError, Transient

log = logging.getLogger(__name__)

#: JetStream error code for "stream name already in use with a different configuration".
_STREAM_NAME_IN_USE = 10058

StreamAction = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class StreamSpec:
    """What a stream must look like; everything not named here keeps the server default.

    ``max_age_s`` 0 keeps messages until the retention policy removes them. ``duplicate_window_s`` is
    how long ``Nats-Msg-Id`` values are remembered for de-duplication.
    """

    name: str
    subjects: tuple[str, ...]
    retention: RetentionPolicy
    description: str
    storage: StorageType = StorageType.FILE
    max_age_s: float = 0.0
    duplicate_window_s: float = 600.0
    discard: DiscardPolicy = DiscardPolicy.OLD
    metadata: dict[str, str] = field(default_factory=dict)

    def config(self, replicas: int = 1) -> StreamConfig:
        """The nats-py configuration for ``replicas`` replicas (1 on one host, 3 in production)."""
        if replicas < 1:
            raise ConfigError(f"stream {self.name}: replicas must be >= 1, got {replicas}")
        return StreamConfig(
            name=self.name,
            description=self.description,
            subjects=list(self.subjects),
            retention=self.retention,
            storage=self.storage,
            max_age=self.max_age_s,
            duplicate_window=self.duplicate_window_s,
            discard=self.discard,
            num_replicas=replicas,
            metadata=dict(self.metadata) or None,
        )


#: Facts ("this now exists"): fan-out to any number of consumers, kept for 30 days.
WISP_EVENTS = StreamSpec(
    name="WISP_EVENTS",
    subjects=(f"{EVENTS_PREFIX}.>",),
    retention=RetentionPolicy.LIMITS,
    description="Wisp events (facts); fan-out; kept 30 days",
    max_age_s=30 * 24 * 3600.0,
)

#: Requests ("make this"): a work queue, a message is removed once a consumer acknowledges it. No age
#: limit: an unhandled command is never dropped silently.
WISP_COMMANDS = StreamSpec(
    name="WISP_COMMANDS",
    subjects=(f"{COMMANDS_PREFIX}.>",),
    retention=RetentionPolicy.WORK_QUEUE,
    description="Wisp commands (work queues); removed when acknowledged",
)

DEFAULT_STREAMS: tuple[StreamSpec, ...] = (WISP_EVENTS, WISP_COMMANDS)


def _seconds_equal(a: float | None, b: float | None) -> bool:
    return math.isclose(a or 0.0, b or 0.0, abs_tol=1e-3)


def differences(current: StreamConfig, wanted: StreamConfig) -> list[str]:
    """Names of the settings in which ``current`` (from the server) differs from ``wanted``."""
    diffs = []
    if sorted(current.subjects or []) != sorted(wanted.subjects or []):
        diffs.append("subjects")
    for name in ("retention", "storage", "discard", "num_replicas", "description"):
        if getattr(current, name) != getattr(wanted, name):
            diffs.append(name)
    for name in ("max_age", "duplicate_window"):
        if not _seconds_equal(getattr(current, name), getattr(wanted, name)):
            diffs.append(name)
    # The server adds its own "_nats.*" metadata keys: compare only ours.
    if any((current.metadata or {}).get(k) != v for k, v in (wanted.metadata or {}).items()):
        diffs.append("metadata")
    return diffs


async def ensure_stream(js: JetStreamContext, spec: StreamSpec, *, replicas: int = 1) -> StreamAction:
    """Create ``spec`` if absent, update it if it differs; safe when several processes race.

    Raises :class:`Transient` when JetStream cannot be reached and :class:`ConfigError` when the
    server refuses the configuration (e.g. a retention change, or 3 replicas without a cluster).
    """
    wanted = spec.config(replicas)
    try:
        for _ in range(5):
            try:
                info = await js.stream_info(spec.name)
            except js_errors.NotFoundError:
                try:
                    await js.add_stream(wanted)
                except js_errors.BadRequestError as exc:
                    if exc.err_code == _STREAM_NAME_IN_USE:
                        continue  # somebody else created it in between: compare with theirs
                    raise
                log.info("created stream %s", spec.name)
                return "created"
            diffs = differences(info.config, wanted)
            if not diffs:
                return "unchanged"
            await js.update_stream(wanted)
            log.info("updated stream %s (%s)", spec.name, ", ".join(diffs))
            return "updated"
        raise Transient(f"stream {spec.name} kept changing while being declared", code="bus.stream_race")
    except js_errors.APIError as exc:
        if not is_refusal(exc):
            raise Transient(f"JetStream unavailable while declaring stream {spec.name}: {exc}",
                            code="bus.unavailable", stream=spec.name) from exc
        raise ConfigError(
            f"JetStream refused the configuration of stream {spec.name}: {exc.description} "
            f"(err_code {exc.err_code}); an incompatible change (retention, storage) needs a manual "
            "migration",
            code="bus.stream_config", stream=spec.name,
        ) from exc
    except TRANSIENT_NATS_ERRORS as exc:
        raise Transient(f"JetStream unavailable while declaring stream {spec.name}: {exc}",
                        code="bus.unavailable", stream=spec.name) from exc


async def ensure_streams(
    js: JetStreamContext, specs: Iterable[StreamSpec] = DEFAULT_STREAMS, *, replicas: int = 1
) -> dict[str, StreamAction]:
    """Declare every stream in ``specs`` (default: WISP_EVENTS and WISP_COMMANDS); name -> action."""
    return {spec.name: await ensure_stream(js, spec, replicas=replicas) for spec in specs}
