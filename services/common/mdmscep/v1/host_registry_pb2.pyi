import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeleteHostRequest(_message.Message):
    __slots__ = ("host_uuid",)
    HOST_UUID_FIELD_NUMBER: _ClassVar[int]
    host_uuid: str
    def __init__(self, host_uuid: _Optional[str] = ...) -> None: ...

class DeleteHostResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class Host(_message.Message):
    __slots__ = ("uuid", "serial_number", "enrolled", "last_seen_at", "device_name", "model", "os_version", "enrolled_at", "push_token_invalid", "product_name", "platform", "facts_updated_at")
    UUID_FIELD_NUMBER: _ClassVar[int]
    SERIAL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_AT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OS_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_AT_FIELD_NUMBER: _ClassVar[int]
    PUSH_TOKEN_INVALID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_NAME_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    FACTS_UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    serial_number: str
    enrolled: bool
    last_seen_at: _timestamp_pb2.Timestamp
    device_name: str
    model: str
    os_version: str
    enrolled_at: _timestamp_pb2.Timestamp
    push_token_invalid: bool
    product_name: str
    platform: str
    facts_updated_at: _timestamp_pb2.Timestamp
    def __init__(self, uuid: _Optional[str] = ..., serial_number: _Optional[str] = ..., enrolled: _Optional[bool] = ..., last_seen_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., device_name: _Optional[str] = ..., model: _Optional[str] = ..., os_version: _Optional[str] = ..., enrolled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., push_token_invalid: _Optional[bool] = ..., product_name: _Optional[str] = ..., platform: _Optional[str] = ..., facts_updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListHostsRequest(_message.Message):
    __slots__ = ("query", "host_uuids", "page", "per_page", "model", "os_version", "product_name", "platform")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    HOST_UUIDS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    PER_PAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OS_VERSION_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_NAME_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    query: str
    host_uuids: _containers.RepeatedScalarFieldContainer[str]
    page: int
    per_page: int
    model: str
    os_version: str
    product_name: str
    platform: str
    def __init__(self, query: _Optional[str] = ..., host_uuids: _Optional[_Iterable[str]] = ..., page: _Optional[int] = ..., per_page: _Optional[int] = ..., model: _Optional[str] = ..., os_version: _Optional[str] = ..., product_name: _Optional[str] = ..., platform: _Optional[str] = ...) -> None: ...

class ListHostsResponse(_message.Message):
    __slots__ = ("hosts", "total")
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedCompositeFieldContainer[Host]
    total: int
    def __init__(self, hosts: _Optional[_Iterable[_Union[Host, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class GetHostsRequest(_message.Message):
    __slots__ = ("host_uuids",)
    HOST_UUIDS_FIELD_NUMBER: _ClassVar[int]
    host_uuids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, host_uuids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetHostsResponse(_message.Message):
    __slots__ = ("hosts",)
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedCompositeFieldContainer[Host]
    def __init__(self, hosts: _Optional[_Iterable[_Union[Host, _Mapping]]] = ...) -> None: ...
