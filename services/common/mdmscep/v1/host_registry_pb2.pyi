from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

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
