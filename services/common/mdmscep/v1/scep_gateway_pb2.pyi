from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ProbeServerRequest(_message.Message):
    __slots__ = ("url",)
    URL_FIELD_NUMBER: _ClassVar[int]
    url: str
    def __init__(self, url: _Optional[str] = ...) -> None: ...

class ProbeServerResponse(_message.Message):
    __slots__ = ("ok", "reason", "ca_certificates", "capabilities")
    OK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CA_CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    reason: str
    ca_certificates: _containers.RepeatedScalarFieldContainer[bytes]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ok: _Optional[bool] = ..., reason: _Optional[str] = ..., ca_certificates: _Optional[_Iterable[bytes]] = ..., capabilities: _Optional[_Iterable[str]] = ...) -> None: ...

class CaRequestStatsRequest(_message.Message):
    __slots__ = ("ca_name", "window_seconds")
    CA_NAME_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ca_name: str
    window_seconds: int
    def __init__(self, ca_name: _Optional[str] = ..., window_seconds: _Optional[int] = ...) -> None: ...

class CaRequestStatsResponse(_message.Message):
    __slots__ = ("issued", "failed", "refused_busy", "in_flight", "average_latency_ms")
    ISSUED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_BUSY_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    issued: int
    failed: int
    refused_busy: int
    in_flight: int
    average_latency_ms: float
    def __init__(self, issued: _Optional[int] = ..., failed: _Optional[int] = ..., refused_busy: _Optional[int] = ..., in_flight: _Optional[int] = ..., average_latency_ms: _Optional[float] = ...) -> None: ...
