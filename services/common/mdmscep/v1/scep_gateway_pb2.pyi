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
