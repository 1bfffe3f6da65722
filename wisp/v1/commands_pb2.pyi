from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class IngestFile(_message.Message):
    __slots__ = ("path", "filename", "source", "project", "privilege")
    PATH_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    PRIVILEGE_FIELD_NUMBER: _ClassVar[int]
    path: str
    filename: str
    source: str
    project: str
    privilege: int
    def __init__(self, path: _Optional[str] = ..., filename: _Optional[str] = ..., source: _Optional[str] = ..., project: _Optional[str] = ..., privilege: _Optional[int] = ...) -> None: ...
