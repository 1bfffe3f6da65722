import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from wisp.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RawFrame(_message.Message):
    __slots__ = ("id", "exposure_id", "instrument", "chip", "hdu_index", "extname", "obstype", "filter", "exptime_s", "date_obs", "mjd_obs", "ra_deg", "dec_deg", "airmass", "object", "naxis1", "naxis2", "raw", "project", "privilege")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXPOSURE_ID_FIELD_NUMBER: _ClassVar[int]
    INSTRUMENT_FIELD_NUMBER: _ClassVar[int]
    CHIP_FIELD_NUMBER: _ClassVar[int]
    HDU_INDEX_FIELD_NUMBER: _ClassVar[int]
    EXTNAME_FIELD_NUMBER: _ClassVar[int]
    OBSTYPE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    EXPTIME_S_FIELD_NUMBER: _ClassVar[int]
    DATE_OBS_FIELD_NUMBER: _ClassVar[int]
    MJD_OBS_FIELD_NUMBER: _ClassVar[int]
    RA_DEG_FIELD_NUMBER: _ClassVar[int]
    DEC_DEG_FIELD_NUMBER: _ClassVar[int]
    AIRMASS_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    NAXIS1_FIELD_NUMBER: _ClassVar[int]
    NAXIS2_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    PRIVILEGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    exposure_id: str
    instrument: str
    chip: str
    hdu_index: int
    extname: str
    obstype: _common_pb2.ObsType
    filter: str
    exptime_s: float
    date_obs: _timestamp_pb2.Timestamp
    mjd_obs: float
    ra_deg: float
    dec_deg: float
    airmass: float
    object: str
    naxis1: int
    naxis2: int
    raw: _common_pb2.ObjectRef
    project: str
    privilege: int
    def __init__(self, id: _Optional[str] = ..., exposure_id: _Optional[str] = ..., instrument: _Optional[str] = ..., chip: _Optional[str] = ..., hdu_index: _Optional[int] = ..., extname: _Optional[str] = ..., obstype: _Optional[_Union[_common_pb2.ObsType, str]] = ..., filter: _Optional[str] = ..., exptime_s: _Optional[float] = ..., date_obs: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., mjd_obs: _Optional[float] = ..., ra_deg: _Optional[float] = ..., dec_deg: _Optional[float] = ..., airmass: _Optional[float] = ..., object: _Optional[str] = ..., naxis1: _Optional[int] = ..., naxis2: _Optional[int] = ..., raw: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., project: _Optional[str] = ..., privilege: _Optional[int] = ...) -> None: ...

class Exposure(_message.Message):
    __slots__ = ("id", "instrument", "sha256", "filename", "obstype", "filter", "exptime_s", "date_obs", "mjd_obs", "ra_deg", "dec_deg", "airmass", "object", "n_chips", "raw", "frame_ids", "project", "privilege")
    ID_FIELD_NUMBER: _ClassVar[int]
    INSTRUMENT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    OBSTYPE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    EXPTIME_S_FIELD_NUMBER: _ClassVar[int]
    DATE_OBS_FIELD_NUMBER: _ClassVar[int]
    MJD_OBS_FIELD_NUMBER: _ClassVar[int]
    RA_DEG_FIELD_NUMBER: _ClassVar[int]
    DEC_DEG_FIELD_NUMBER: _ClassVar[int]
    AIRMASS_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    N_CHIPS_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    FRAME_IDS_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    PRIVILEGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    instrument: str
    sha256: str
    filename: str
    obstype: _common_pb2.ObsType
    filter: str
    exptime_s: float
    date_obs: _timestamp_pb2.Timestamp
    mjd_obs: float
    ra_deg: float
    dec_deg: float
    airmass: float
    object: str
    n_chips: int
    raw: _common_pb2.ObjectRef
    frame_ids: _containers.RepeatedScalarFieldContainer[str]
    project: str
    privilege: int
    def __init__(self, id: _Optional[str] = ..., instrument: _Optional[str] = ..., sha256: _Optional[str] = ..., filename: _Optional[str] = ..., obstype: _Optional[_Union[_common_pb2.ObsType, str]] = ..., filter: _Optional[str] = ..., exptime_s: _Optional[float] = ..., date_obs: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., mjd_obs: _Optional[float] = ..., ra_deg: _Optional[float] = ..., dec_deg: _Optional[float] = ..., airmass: _Optional[float] = ..., object: _Optional[str] = ..., n_chips: _Optional[int] = ..., raw: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., frame_ids: _Optional[_Iterable[str]] = ..., project: _Optional[str] = ..., privilege: _Optional[int] = ...) -> None: ...
