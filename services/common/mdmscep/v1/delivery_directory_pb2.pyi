import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CountDeliveriesRequest(_message.Message):
    __slots__ = ("profile_uuid", "host_uuid", "paced_ca_name")
    PROFILE_UUID_FIELD_NUMBER: _ClassVar[int]
    HOST_UUID_FIELD_NUMBER: _ClassVar[int]
    PACED_CA_NAME_FIELD_NUMBER: _ClassVar[int]
    profile_uuid: str
    host_uuid: str
    paced_ca_name: str
    def __init__(self, profile_uuid: _Optional[str] = ..., host_uuid: _Optional[str] = ..., paced_ca_name: _Optional[str] = ...) -> None: ...

class DeliveryCounts(_message.Message):
    __slots__ = ("by_status",)
    class ByStatusEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    BY_STATUS_FIELD_NUMBER: _ClassVar[int]
    by_status: _containers.ScalarMap[str, int]
    def __init__(self, by_status: _Optional[_Mapping[str, int]] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("host_uuid", "profile_uuid", "profile_name", "identifier", "operation_type", "status", "detail", "updated_at")
    HOST_UUID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_UUID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_NAME_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    OPERATION_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    host_uuid: str
    profile_uuid: str
    profile_name: str
    identifier: str
    operation_type: str
    status: str
    detail: str
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, host_uuid: _Optional[str] = ..., profile_uuid: _Optional[str] = ..., profile_name: _Optional[str] = ..., identifier: _Optional[str] = ..., operation_type: _Optional[str] = ..., status: _Optional[str] = ..., detail: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListDeliveriesRequest(_message.Message):
    __slots__ = ("profile_uuid", "host_uuid", "status", "page", "per_page")
    PROFILE_UUID_FIELD_NUMBER: _ClassVar[int]
    HOST_UUID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    PER_PAGE_FIELD_NUMBER: _ClassVar[int]
    profile_uuid: str
    host_uuid: str
    status: str
    page: int
    per_page: int
    def __init__(self, profile_uuid: _Optional[str] = ..., host_uuid: _Optional[str] = ..., status: _Optional[str] = ..., page: _Optional[int] = ..., per_page: _Optional[int] = ...) -> None: ...

class ListDeliveriesResponse(_message.Message):
    __slots__ = ("deliveries", "total")
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    deliveries: _containers.RepeatedCompositeFieldContainer[Delivery]
    total: int
    def __init__(self, deliveries: _Optional[_Iterable[_Union[Delivery, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class ListHostsWithDeliveriesRequest(_message.Message):
    __slots__ = ("profile_uuid", "status", "host_uuids", "page", "per_page")
    PROFILE_UUID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HOST_UUIDS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    PER_PAGE_FIELD_NUMBER: _ClassVar[int]
    profile_uuid: str
    status: str
    host_uuids: _containers.RepeatedScalarFieldContainer[str]
    page: int
    per_page: int
    def __init__(self, profile_uuid: _Optional[str] = ..., status: _Optional[str] = ..., host_uuids: _Optional[_Iterable[str]] = ..., page: _Optional[int] = ..., per_page: _Optional[int] = ...) -> None: ...

class ListHostsWithDeliveriesResponse(_message.Message):
    __slots__ = ("host_uuids", "total")
    HOST_UUIDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    host_uuids: _containers.RepeatedScalarFieldContainer[str]
    total: int
    def __init__(self, host_uuids: _Optional[_Iterable[str]] = ..., total: _Optional[int] = ...) -> None: ...

class HostCertificate(_message.Message):
    __slots__ = ("host_uuid", "profile_uuid", "serial", "subject", "issuer", "not_before", "not_after")
    HOST_UUID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_UUID_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    host_uuid: str
    profile_uuid: str
    serial: str
    subject: str
    issuer: str
    not_before: _timestamp_pb2.Timestamp
    not_after: _timestamp_pb2.Timestamp
    def __init__(self, host_uuid: _Optional[str] = ..., profile_uuid: _Optional[str] = ..., serial: _Optional[str] = ..., subject: _Optional[str] = ..., issuer: _Optional[str] = ..., not_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., not_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListCertificatesRequest(_message.Message):
    __slots__ = ("host_uuid", "expiring_within_days", "page", "per_page")
    HOST_UUID_FIELD_NUMBER: _ClassVar[int]
    EXPIRING_WITHIN_DAYS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    PER_PAGE_FIELD_NUMBER: _ClassVar[int]
    host_uuid: str
    expiring_within_days: float
    page: int
    per_page: int
    def __init__(self, host_uuid: _Optional[str] = ..., expiring_within_days: _Optional[float] = ..., page: _Optional[int] = ..., per_page: _Optional[int] = ...) -> None: ...

class ListCertificatesResponse(_message.Message):
    __slots__ = ("certificates", "total")
    CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    certificates: _containers.RepeatedCompositeFieldContainer[HostCertificate]
    total: int
    def __init__(self, certificates: _Optional[_Iterable[_Union[HostCertificate, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class GetIssuanceRateRequest(_message.Message):
    __slots__ = ("ca_id",)
    CA_ID_FIELD_NUMBER: _ClassVar[int]
    ca_id: int
    def __init__(self, ca_id: _Optional[int] = ...) -> None: ...

class IssuanceRate(_message.Message):
    __slots__ = ("per_second", "ceiling", "reason", "changed_at")
    PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    CEILING_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    per_second: float
    ceiling: float
    reason: str
    changed_at: _timestamp_pb2.Timestamp
    def __init__(self, per_second: _Optional[float] = ..., ceiling: _Optional[float] = ..., reason: _Optional[str] = ..., changed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
