"""One delivery: its metadata, its decoding, and the failure records made when giving up on it."""

from __future__ import annotations

import json
import traceback
from collections.abc import Mapping
from typing import TypeVar

from google.protobuf.message import DecodeError, Message
from nats.aio.msg import Msg

from wisp.bus.types import MSG_ID_HEADER, MSG_TYPE_HEADER, DeliveryInfo, FailureKind, FailureRecord
from wisp.errors import InvalidInput, WispError

MessageT = TypeVar("MessageT", bound=Message)


def delivery_info(msg: Msg) -> DeliveryInfo:
    """Metadata of a JetStream delivery (from its reply subject and headers)."""
    meta = msg.metadata
    headers = dict(msg.headers or {})
    return DeliveryInfo(
        subject=msg.subject, msg_id=headers.get(MSG_ID_HEADER), num_delivered=meta.num_delivered,
        stream_seq=meta.sequence.stream, stream=meta.stream, consumer=meta.consumer,
        timestamp=meta.timestamp, headers=headers,
    )


def decode(msg: Msg, message_type: type[MessageT]) -> MessageT:
    """Parse the payload; :class:`InvalidInput` if it is of another declared type or not parseable."""
    expected = message_type.DESCRIPTOR.full_name
    sent = (msg.headers or {}).get(MSG_TYPE_HEADER)
    if sent and sent != expected:
        raise InvalidInput(f"message on {msg.subject} is a {sent}, expected {expected}",
                           code="bus.wrong_type", expected=expected, got=sent)
    try:
        return message_type.FromString(msg.data)
    except DecodeError as exc:
        raise InvalidInput(f"payload on {msg.subject} is not a valid {expected}: {exc}",
                           code="bus.undecodable", expected=expected) from exc


def record_for(kind: FailureKind, info: DeliveryInfo, payload: bytes, exc: BaseException) -> FailureRecord:
    """The record of a delivery given up after ``exc``; ``invalid`` ones carry no traceback."""
    wisp = isinstance(exc, WispError)
    return FailureRecord(
        kind=kind,
        stream=info.stream,
        subject=info.subject,
        consumer=info.consumer,
        msg_id=info.msg_id,
        deliveries=info.num_delivered,
        payload=bytes(payload),
        stream_seq=info.stream_seq,
        error_code=exc.code if isinstance(exc, WispError) else "internal",
        message=str(exc) if wisp else f"{type(exc).__name__}: {exc}",
        traceback=None if kind == "invalid" else "".join(traceback.format_exception(exc)),
        headers=dict(info.headers),
        details={k: str(v) for k, v in exc.details.items()} if isinstance(exc, WispError) else {},
    )


def advisory_sequence(data: bytes) -> tuple[int, int]:
    """(stream sequence, deliveries) from a ``MAX_DELIVERIES`` advisory payload."""
    event = json.loads(data)
    return int(event["stream_seq"]), int(event.get("deliveries", 0))


def record_for_max_deliveries(
    *, stream: str, consumer: str, subject: str, seq: int, deliveries: int, payload: bytes,
    headers: Mapping[str, str],
) -> FailureRecord:
    """The record of a message the server stopped delivering after ``deliveries`` silent attempts."""
    return FailureRecord(
        kind="exhausted",
        stream=stream,
        subject=subject,
        consumer=consumer,
        msg_id=headers.get(MSG_ID_HEADER),
        deliveries=deliveries,
        payload=payload,
        stream_seq=seq,
        error_code="bus.max_deliveries",
        message=f"delivered {deliveries} times without an acknowledgement "
                "(the handler's process crashed, hung or outlived ack_wait)",
        headers=dict(headers),
    )
