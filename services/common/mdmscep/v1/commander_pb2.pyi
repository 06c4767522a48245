from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HostCommand(_message.Message):
    __slots__ = ("host_uuid", "command_uuid", "request_type", "payload", "replaces_command_uuid")
    HOST_UUID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_UUID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    REPLACES_COMMAND_UUID_FIELD_NUMBER: _ClassVar[int]
    host_uuid: str
    command_uuid: str
    request_type: str
    payload: bytes
    replaces_command_uuid: str
    def __init__(self, host_uuid: _Optional[str] = ..., command_uuid: _Optional[str] = ..., request_type: _Optional[str] = ..., payload: _Optional[bytes] = ..., replaces_command_uuid: _Optional[str] = ...) -> None: ...

class EnqueueRequest(_message.Message):
    __slots__ = ("commands",)
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    commands: _containers.RepeatedCompositeFieldContainer[HostCommand]
    def __init__(self, commands: _Optional[_Iterable[_Union[HostCommand, _Mapping]]] = ...) -> None: ...

class EnqueueResponse(_message.Message):
    __slots__ = ("queued", "pushes_requested")
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    PUSHES_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    queued: int
    pushes_requested: int
    def __init__(self, queued: _Optional[int] = ..., pushes_requested: _Optional[int] = ...) -> None: ...
