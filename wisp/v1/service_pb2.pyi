import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from wisp.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PingReply(_message.Message):
    __slots__ = ("name", "instance_id", "now")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    NOW_FIELD_NUMBER: _ClassVar[int]
    name: str
    instance_id: str
    now: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., instance_id: _Optional[str] = ..., now: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("name", "kind", "subjects", "stream", "durable")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DURABLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    subjects: _containers.RepeatedScalarFieldContainer[str]
    stream: str
    durable: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., subjects: _Optional[_Iterable[str]] = ..., stream: _Optional[str] = ..., durable: _Optional[str] = ...) -> None: ...

class InfoReply(_message.Message):
    __slots__ = ("name", "version", "instance_id", "host", "started_at", "endpoints", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    instance_id: str
    host: str
    started_at: _timestamp_pb2.Timestamp
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    description: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., instance_id: _Optional[str] = ..., host: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ..., description: _Optional[str] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EndpointStats(_message.Message):
    __slots__ = ("name", "handled", "succeeded", "failed_invalid", "failed_bug", "failed_exhausted", "retried", "in_flight", "average_processing_ms", "last_error", "ack_errors")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HANDLED_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_INVALID_FIELD_NUMBER: _ClassVar[int]
    FAILED_BUG_FIELD_NUMBER: _ClassVar[int]
    FAILED_EXHAUSTED_FIELD_NUMBER: _ClassVar[int]
    RETRIED_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_PROCESSING_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    ACK_ERRORS_FIELD_NUMBER: _ClassVar[int]
    name: str
    handled: int
    succeeded: int
    failed_invalid: int
    failed_bug: int
    failed_exhausted: int
    retried: int
    in_flight: int
    average_processing_ms: float
    last_error: _common_pb2.ErrorInfo
    ack_errors: int
    def __init__(self, name: _Optional[str] = ..., handled: _Optional[int] = ..., succeeded: _Optional[int] = ..., failed_invalid: _Optional[int] = ..., failed_bug: _Optional[int] = ..., failed_exhausted: _Optional[int] = ..., retried: _Optional[int] = ..., in_flight: _Optional[int] = ..., average_processing_ms: _Optional[float] = ..., last_error: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ..., ack_errors: _Optional[int] = ...) -> None: ...

class StatsReply(_message.Message):
    __slots__ = ("name", "instance_id", "started_at", "endpoints")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    instance_id: str
    started_at: _timestamp_pb2.Timestamp
    endpoints: _containers.RepeatedCompositeFieldContainer[EndpointStats]
    def __init__(self, name: _Optional[str] = ..., instance_id: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., endpoints: _Optional[_Iterable[_Union[EndpointStats, _Mapping]]] = ...) -> None: ...
