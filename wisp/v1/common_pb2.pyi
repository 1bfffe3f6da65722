from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ObsType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OBS_TYPE_UNSPECIFIED: _ClassVar[ObsType]
    OBS_TYPE_BIAS: _ClassVar[ObsType]
    OBS_TYPE_DARK: _ClassVar[ObsType]
    OBS_TYPE_FLAT: _ClassVar[ObsType]
    OBS_TYPE_SCIENCE: _ClassVar[ObsType]
    OBS_TYPE_OTHER: _ClassVar[ObsType]
OBS_TYPE_UNSPECIFIED: ObsType
OBS_TYPE_BIAS: ObsType
OBS_TYPE_DARK: ObsType
OBS_TYPE_FLAT: ObsType
OBS_TYPE_SCIENCE: ObsType
OBS_TYPE_OTHER: ObsType

class ErrorInfo(_message.Message):
    __slots__ = ("code", "message", "details")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    details: _containers.ScalarMap[str, str]
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., details: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ObjectRef(_message.Message):
    __slots__ = ("key", "sha256", "size")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    key: str
    sha256: str
    size: int
    def __init__(self, key: _Optional[str] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...
