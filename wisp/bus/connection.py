"""The bus connection: one nats-py client with reconnects, its JetStream context, and publishing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from types import TracebackType
from urllib.parse import urlparse

import nats.errors
from google.protobuf.message import Message
from nats.aio.client import Client
from nats.js import JetStreamContext

from wisp.bus._nats_errors import ANY_NATS_ERRORS, TRANSIENT_NATS_ERRORS, TRANSIENT_OR_API_ERRORS
from wisp.bus.streams import DEFAULT_STREAMS, StreamAction, StreamSpec, ensure_streams
from wisp.bus.subjects import message_type_for
from wisp.bus.types import MSG_ID_HEADER, MSG_TYPE_HEADER
from wisp.config import Settings
from wisp.errors import PayloadTooLarge, Transient

log = logging.getLogger(__name__)
_CONNECT_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *ANY_NATS_ERRORS)


def redact(url: str) -> str:
    """``url`` without credentials, fit for messages and logs."""
    parts = urlparse(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return parts._replace(netloc=netloc).geturl()
    return url


class Bus:
    """A connected NATS client and JetStream context. Make one with :meth:`connect`."""

    def __init__(self, nc: Client, url: str, *, publish_timeout: float = 5.0) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=publish_timeout)
        self._url = url
        self.publish_timeout = publish_timeout

    @classmethod
    async def connect(
        cls,
        target: Settings | str,
        *,
        name: str | None = None,
        connect_timeout: float = 5.0,
        reconnect_time_wait: float = 2.0,
        max_reconnect_attempts: int = -1,
        publish_timeout: float = 5.0,
    ) -> Bus:
        """Connect to ``target`` (a URL or the ``nats_url`` of :class:`~wisp.config.Settings`).

        Gives up after ``connect_timeout`` seconds with :class:`Transient` naming the URL. Once
        connected the client reconnects by itself (``max_reconnect_attempts`` -1: forever), keeping
        subscriptions; calls made while disconnected fail with :class:`Transient` after their timeout.
        """
        url = target.nats_url if isinstance(target, Settings) else target
        shown = redact(url)
        nc = Client()
        last_error: list[BaseException] = []

        async def on_error(exc: Exception) -> None:
            last_error[:] = [exc]
            log.warning("NATS %s: %s: %s", shown, type(exc).__name__, exc)

        async def on_disconnected() -> None:
            if not nc.is_closed:
                log.warning("NATS %s: disconnected; reconnecting", shown)

        async def on_reconnected() -> None:
            log.info("NATS %s: reconnected", shown)

        async def on_closed() -> None:
            log.info("NATS %s: connection closed", shown)

        try:
            await asyncio.wait_for(
                nc.connect(
                    servers=[url],
                    name=name,
                    connect_timeout=max(1, int(min(connect_timeout, 5))),
                    allow_reconnect=True,
                    max_reconnect_attempts=max_reconnect_attempts,
                    reconnect_time_wait=reconnect_time_wait,  # type: ignore[arg-type]  # float is fine
                    error_cb=on_error,
                    disconnected_cb=on_disconnected,
                    reconnected_cb=on_reconnected,
                    closed_cb=on_closed,
                ),
                timeout=connect_timeout,
            )
        except _CONNECT_ERRORS as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            cause = last_error[0] if last_error else exc
            raise Transient(
                f"cannot connect to NATS at {shown} within {connect_timeout:g} s: "
                f"{type(cause).__name__}: {cause}",
                code="bus.unavailable", url=shown,
            ) from exc
        return cls(nc, url, publish_timeout=publish_timeout)

    @property
    def nc(self) -> Client:
        """The underlying nats-py client."""
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context."""
        return self._js

    @property
    def url(self) -> str:
        """The server URL, without credentials."""
        return redact(self._url)

    @property
    def is_connected(self) -> bool:
        """True while connected (False while reconnecting or after close)."""
        return bool(self._nc.is_connected)

    async def ensure_streams(
        self, specs: Iterable[StreamSpec] = DEFAULT_STREAMS, *, replicas: int = 1
    ) -> dict[str, StreamAction]:
        """Declare the Wisp streams (see :func:`wisp.bus.streams.ensure_streams`)."""
        return await ensure_streams(self._js, specs, replicas=replicas)

    async def publish(
        self,
        subject: str,
        message: Message,
        *,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Publish ``message`` to JetStream and wait for the server to store it.

        ``msg_id`` (the entity or command id) goes into ``Nats-Msg-Id``: the same id within the stream's
        duplicate window is stored once. Returns True when stored, False when it was a duplicate.
        Raises :class:`Transient` when the bus does not confirm (publishing again with the same id is
        then safe) and :class:`~wisp.errors.PayloadTooLarge` when the message exceeds the server limit.
        """
        name = message.DESCRIPTOR.full_name
        expected = message_type_for(subject)
        if expected is not None and expected != name:
            raise ValueError(f"{subject} carries {expected}, not {name}")
        return await self.publish_raw(subject, message.SerializeToString(), msg_id=msg_id, headers=headers,
                                      msg_type=name, timeout=timeout)

    async def publish_raw(
        self,
        subject: str,
        payload: bytes,
        *,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
        msg_type: str | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Like :meth:`publish` for an already serialised message (e.g. from an outbox table).

        ``msg_type`` is the protobuf full name (``wisp.v1.FrameIngested``) for the type header; by
        default it is looked up from the subject (:data:`wisp.bus.subjects.MESSAGE_TYPES`); with
        neither, consumers skip the type check.
        """
        if not msg_id:
            raise ValueError("publish needs a non-empty msg_id (the entity or command id)")
        hdrs = dict(headers or {})
        hdrs[MSG_ID_HEADER] = msg_id
        msg_type = msg_type or message_type_for(subject)
        if msg_type:
            hdrs[MSG_TYPE_HEADER] = msg_type
        try:
            ack = await self._js.publish(subject, payload, timeout=timeout or self.publish_timeout,
                                         headers=hdrs)
        except nats.errors.MaxPayloadError as exc:
            raise PayloadTooLarge(
                f"message for {subject} is {len(payload)} bytes, over the server's max_payload",
                code="bus.payload_too_large", subject=subject, size=len(payload),
            ) from exc
        except TRANSIENT_OR_API_ERRORS as exc:
            raise Transient(
                f"publish to {subject} (msg_id {msg_id}) on {self.url} not confirmed: "
                f"{type(exc).__name__}: {exc}",
                code="bus.publish_failed", subject=subject, msg_id=msg_id,
            ) from exc
        return not ack.duplicate

    async def drain(self) -> None:
        """Stop subscriptions, flush pending publishes and close (graceful shutdown)."""
        if self._nc.is_closed:
            return
        try:
            await self._nc.drain()
        except TRANSIENT_NATS_ERRORS as exc:
            log.warning("NATS %s: drain incomplete (%s); closing", self.url, exc)
            await self.close()

    async def close(self) -> None:
        """Close the connection at once (idempotent)."""
        if not self._nc.is_closed:
            await self._nc.close()

    async def __aenter__(self) -> Bus:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


def ensure_streams_at(
    url: str,
    specs: Iterable[StreamSpec] = DEFAULT_STREAMS,
    *,
    replicas: int = 1,
    connect_timeout: float = 5.0,
) -> dict[str, StreamAction]:
    """Blocking helper for non-async callers (``wisp up``): connect, declare the streams, close.

    Must not be called from a running event loop (use :meth:`Bus.ensure_streams` there).
    """

    async def run() -> dict[str, StreamAction]:
        async with await Bus.connect(url, name="wisp-ensure-streams", connect_timeout=connect_timeout) as bus:
            return await bus.ensure_streams(specs, replicas=replicas)

    return asyncio.run(run())
