from wisp.v1 import common_pb2 as _common_pb2
from wisp.v1 import ingest_pb2 as _ingest_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RefcatResult(_message.Message):
    __slots__ = ("status", "product_id", "n_stars", "n_partitions", "bands", "error")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[RefcatResult.Status]
        STATUS_CREATED: _ClassVar[RefcatResult.Status]
        STATUS_DUPLICATE: _ClassVar[RefcatResult.Status]
        STATUS_REJECTED: _ClassVar[RefcatResult.Status]
    STATUS_UNSPECIFIED: RefcatResult.Status
    STATUS_CREATED: RefcatResult.Status
    STATUS_DUPLICATE: RefcatResult.Status
    STATUS_REJECTED: RefcatResult.Status
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    N_STARS_FIELD_NUMBER: _ClassVar[int]
    N_PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    BANDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: RefcatResult.Status
    product_id: str
    n_stars: int
    n_partitions: int
    bands: _containers.RepeatedScalarFieldContainer[str]
    error: _common_pb2.ErrorInfo
    def __init__(self, status: _Optional[_Union[RefcatResult.Status, str]] = ..., product_id: _Optional[str] = ..., n_stars: _Optional[int] = ..., n_partitions: _Optional[int] = ..., bands: _Optional[_Iterable[str]] = ..., error: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ...) -> None: ...
