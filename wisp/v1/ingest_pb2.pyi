from wisp.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UploadHeader(_message.Message):
    __slots__ = ("filename", "source", "declared_size", "project", "privilege")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DECLARED_SIZE_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    PRIVILEGE_FIELD_NUMBER: _ClassVar[int]
    filename: str
    source: str
    declared_size: int
    project: str
    privilege: int
    def __init__(self, filename: _Optional[str] = ..., source: _Optional[str] = ..., declared_size: _Optional[int] = ..., project: _Optional[str] = ..., privilege: _Optional[int] = ...) -> None: ...

class UploadChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class IngestResult(_message.Message):
    __slots__ = ("status", "exposure_id", "frame_ids", "sha256", "instrument", "error")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[IngestResult.Status]
        STATUS_INGESTED: _ClassVar[IngestResult.Status]
        STATUS_DUPLICATE: _ClassVar[IngestResult.Status]
        STATUS_REJECTED: _ClassVar[IngestResult.Status]
    STATUS_UNSPECIFIED: IngestResult.Status
    STATUS_INGESTED: IngestResult.Status
    STATUS_DUPLICATE: IngestResult.Status
    STATUS_REJECTED: IngestResult.Status
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EXPOSURE_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_IDS_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    INSTRUMENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: IngestResult.Status
    exposure_id: str
    frame_ids: _containers.RepeatedScalarFieldContainer[str]
    sha256: str
    instrument: str
    error: _common_pb2.ErrorInfo
    def __init__(self, status: _Optional[_Union[IngestResult.Status, str]] = ..., exposure_id: _Optional[str] = ..., frame_ids: _Optional[_Iterable[str]] = ..., sha256: _Optional[str] = ..., instrument: _Optional[str] = ..., error: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ...) -> None: ...
