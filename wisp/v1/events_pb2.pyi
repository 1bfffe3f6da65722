from wisp.v1 import common_pb2 as _common_pb2
from wisp.v1 import frame_pb2 as _frame_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FrameIngested(_message.Message):
    __slots__ = ("frame", "source")
    FRAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    frame: _frame_pb2.RawFrame
    source: str
    def __init__(self, frame: _Optional[_Union[_frame_pb2.RawFrame, _Mapping]] = ..., source: _Optional[str] = ...) -> None: ...

class ExposureIngested(_message.Message):
    __slots__ = ("exposure",)
    EXPOSURE_FIELD_NUMBER: _ClassVar[int]
    exposure: _frame_pb2.Exposure
    def __init__(self, exposure: _Optional[_Union[_frame_pb2.Exposure, _Mapping]] = ...) -> None: ...

class IngestRejected(_message.Message):
    __slots__ = ("filename", "sha256", "source", "error")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    filename: str
    sha256: str
    source: str
    error: _common_pb2.ErrorInfo
    def __init__(self, filename: _Optional[str] = ..., sha256: _Optional[str] = ..., source: _Optional[str] = ..., error: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ...) -> None: ...
