"""The Wisp bus kernel: NATS JetStream streams, publishing, and the one consumer wrapper.

Typical use in a service::

    bus = await Bus.connect(settings, name="calib")
    await bus.ensure_streams(replicas=1)
    consumer = Consumer(bus, ConsumerSpec(stream="WISP_EVENTS", durable="calib-frames",
                                          subjects=(ALL_FRAMES_INGESTED,)),
                        FrameIngested, handle_frame, recorder=db_recorder)
    await consumer.start()
    ...
    await consumer.stop()   # on SIGTERM: finish in-flight work
    await bus.drain()
"""

from wisp.bus.connection import Bus, ensure_streams_at
from wisp.bus.consumer import Consumer, Handler
from wisp.bus.spec import ConsumerSpec
from wisp.bus.stats import ConsumerStats
from wisp.bus.streams import (
    DEFAULT_STREAMS,
    WISP_COMMANDS,
    WISP_EVENTS,
    StreamSpec,
    ensure_stream,
    ensure_streams,
)
from wisp.bus.subjects import (
    ALL_EXPOSURES_INGESTED,
    ALL_FRAMES_INGESTED,
    ALL_PRODUCTS_CREATED,
    INGEST_FILE,
    INGEST_REJECTED,
    MESSAGE_TYPES,
    exposure_ingested_subject,
    frame_ingested_subject,
    ingest_file_subject,
    ingest_rejected_subject,
    make_product_msg_id,
    make_product_subject,
    message_type_for,
    product_created_subject,
    product_invalidated_subject,
    token,
)
from wisp.bus.types import (
    MSG_ID_HEADER,
    MSG_TYPE_HEADER,
    Backoff,
    DeliveryInfo,
    FailureKind,
    FailureRecord,
    FailureRecorder,
)

__all__ = [
    "ALL_EXPOSURES_INGESTED",
    "ALL_FRAMES_INGESTED",
    "ALL_PRODUCTS_CREATED",
    "DEFAULT_STREAMS",
    "INGEST_FILE",
    "INGEST_REJECTED",
    "MESSAGE_TYPES",
    "MSG_ID_HEADER",
    "MSG_TYPE_HEADER",
    "WISP_COMMANDS",
    "WISP_EVENTS",
    "Backoff",
    "Bus",
    "Consumer",
    "ConsumerSpec",
    "ConsumerStats",
    "DeliveryInfo",
    "FailureKind",
    "FailureRecord",
    "FailureRecorder",
    "Handler",
    "StreamSpec",
    "ensure_stream",
    "ensure_streams",
    "ensure_streams_at",
    "exposure_ingested_subject",
    "frame_ingested_subject",
    "ingest_file_subject",
    "ingest_rejected_subject",
    "make_product_msg_id",
    "make_product_subject",
    "message_type_for",
    "product_created_subject",
    "product_invalidated_subject",
    "token",
]
