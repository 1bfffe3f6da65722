import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InputRef(_message.Message):
    __slots__ = ("id", "entity_kind", "role")
    ID_FIELD_NUMBER: _ClassVar[int]
    ENTITY_KIND_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    id: str
    entity_kind: str
    role: str
    def __init__(self, id: _Optional[str] = ..., entity_kind: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class Product(_message.Message):
    __slots__ = ("id", "kind", "stage", "instrument", "chip", "filter", "night", "field", "object_key", "sha256", "created_at", "frame_id", "exposure_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    INSTRUMENT_FIELD_NUMBER: _ClassVar[int]
    CHIP_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    NIGHT_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    EXPOSURE_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    stage: str
    instrument: str
    chip: str
    filter: str
    night: str
    field: str
    object_key: str
    sha256: str
    created_at: _timestamp_pb2.Timestamp
    frame_id: str
    exposure_id: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., stage: _Optional[str] = ..., instrument: _Optional[str] = ..., chip: _Optional[str] = ..., filter: _Optional[str] = ..., night: _Optional[str] = ..., field: _Optional[str] = ..., object_key: _Optional[str] = ..., sha256: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., frame_id: _Optional[str] = ..., exposure_id: _Optional[str] = ...) -> None: ...

class ProductCreated(_message.Message):
    __slots__ = ("product",)
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    product: Product
    def __init__(self, product: _Optional[_Union[Product, _Mapping]] = ...) -> None: ...

class MakeProduct(_message.Message):
    __slots__ = ("stage", "product_id", "inputs", "params_json", "group_json", "job_id")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    GROUP_JSON_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    stage: str
    product_id: str
    inputs: _containers.RepeatedCompositeFieldContainer[InputRef]
    params_json: str
    group_json: str
    job_id: str
    def __init__(self, stage: _Optional[str] = ..., product_id: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[InputRef, _Mapping]]] = ..., params_json: _Optional[str] = ..., group_json: _Optional[str] = ..., job_id: _Optional[str] = ...) -> None: ...

class ProductInvalidated(_message.Message):
    __slots__ = ("product_id", "kind", "reason", "outdated_ids", "at")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OUTDATED_IDS_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    kind: str
    reason: str
    outdated_ids: _containers.RepeatedScalarFieldContainer[str]
    at: _timestamp_pb2.Timestamp
    def __init__(self, product_id: _Optional[str] = ..., kind: _Optional[str] = ..., reason: _Optional[str] = ..., outdated_ids: _Optional[_Iterable[str]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
