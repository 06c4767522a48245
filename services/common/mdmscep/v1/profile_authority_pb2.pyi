from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScepRefusal(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCEP_REFUSAL_UNSPECIFIED: _ClassVar[ScepRefusal]
    SCEP_REFUSAL_UNKNOWN_OPERATION: _ClassVar[ScepRefusal]
    SCEP_REFUSAL_UNKNOWN_HOST: _ClassVar[ScepRefusal]
    SCEP_REFUSAL_UNKNOWN_PROFILE: _ClassVar[ScepRefusal]
    SCEP_REFUSAL_UNKNOWN_CA: _ClassVar[ScepRefusal]
    SCEP_REFUSAL_NOT_PENDING: _ClassVar[ScepRefusal]
    SCEP_REFUSAL_CODE_UNKNOWN: _ClassVar[ScepRefusal]
    SCEP_REFUSAL_CODE_USED: _ClassVar[ScepRefusal]
    SCEP_REFUSAL_CODE_EXPIRED: _ClassVar[ScepRefusal]
    SCEP_REFUSAL_CODE_SUPERSEDED: _ClassVar[ScepRefusal]
SCEP_REFUSAL_UNSPECIFIED: ScepRefusal
SCEP_REFUSAL_UNKNOWN_OPERATION: ScepRefusal
SCEP_REFUSAL_UNKNOWN_HOST: ScepRefusal
SCEP_REFUSAL_UNKNOWN_PROFILE: ScepRefusal
SCEP_REFUSAL_UNKNOWN_CA: ScepRefusal
SCEP_REFUSAL_NOT_PENDING: ScepRefusal
SCEP_REFUSAL_CODE_UNKNOWN: ScepRefusal
SCEP_REFUSAL_CODE_USED: ScepRefusal
SCEP_REFUSAL_CODE_EXPIRED: ScepRefusal
SCEP_REFUSAL_CODE_SUPERSEDED: ScepRefusal

class AuthorizeScepRequest(_message.Message):
    __slots__ = ("host_uuid", "profile_uuid", "ca_name", "one_time_code", "operation")
    HOST_UUID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_UUID_FIELD_NUMBER: _ClassVar[int]
    CA_NAME_FIELD_NUMBER: _ClassVar[int]
    ONE_TIME_CODE_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    host_uuid: str
    profile_uuid: str
    ca_name: str
    one_time_code: str
    operation: str
    def __init__(self, host_uuid: _Optional[str] = ..., profile_uuid: _Optional[str] = ..., ca_name: _Optional[str] = ..., one_time_code: _Optional[str] = ..., operation: _Optional[str] = ...) -> None: ...

class AuthorizeScepResponse(_message.Message):
    __slots__ = ("allowed", "reason", "upstream_url", "ca_id", "refusal", "max_concurrent_requests")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_URL_FIELD_NUMBER: _ClassVar[int]
    CA_ID_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    reason: str
    upstream_url: str
    ca_id: int
    refusal: ScepRefusal
    max_concurrent_requests: int
    def __init__(self, allowed: _Optional[bool] = ..., reason: _Optional[str] = ..., upstream_url: _Optional[str] = ..., ca_id: _Optional[int] = ..., refusal: _Optional[_Union[ScepRefusal, str]] = ..., max_concurrent_requests: _Optional[int] = ...) -> None: ...

class GiveBackScepCodeRequest(_message.Message):
    __slots__ = ("host_uuid", "profile_uuid", "ca_name", "one_time_code")
    HOST_UUID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_UUID_FIELD_NUMBER: _ClassVar[int]
    CA_NAME_FIELD_NUMBER: _ClassVar[int]
    ONE_TIME_CODE_FIELD_NUMBER: _ClassVar[int]
    host_uuid: str
    profile_uuid: str
    ca_name: str
    one_time_code: str
    def __init__(self, host_uuid: _Optional[str] = ..., profile_uuid: _Optional[str] = ..., ca_name: _Optional[str] = ..., one_time_code: _Optional[str] = ...) -> None: ...

class GiveBackScepCodeResponse(_message.Message):
    __slots__ = ("given_back",)
    GIVEN_BACK_FIELD_NUMBER: _ClassVar[int]
    given_back: bool
    def __init__(self, given_back: _Optional[bool] = ...) -> None: ...
