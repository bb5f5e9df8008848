import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATUS_UNSPECIFIED: _ClassVar[TaskStatus]
    TASK_STATUS_WAITING: _ClassVar[TaskStatus]
    TASK_STATUS_PENDING: _ClassVar[TaskStatus]
    TASK_STATUS_ASSIGNED: _ClassVar[TaskStatus]
    TASK_STATUS_ACCEPTED: _ClassVar[TaskStatus]
    TASK_STATUS_RUNNING: _ClassVar[TaskStatus]
    TASK_STATUS_UPLOADING: _ClassVar[TaskStatus]
    TASK_STATUS_SUCCEEDED: _ClassVar[TaskStatus]
    TASK_STATUS_FAILED: _ClassVar[TaskStatus]
    TASK_STATUS_PAUSED: _ClassVar[TaskStatus]
    TASK_STATUS_CANCELED: _ClassVar[TaskStatus]

class Shell(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SHELL_NONE: _ClassVar[Shell]
    SHELL_SH: _ClassVar[Shell]
    SHELL_BASH: _ClassVar[Shell]

class ExecutionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTION_STATE_UNSPECIFIED: _ClassVar[ExecutionState]
    EXECUTION_STATE_ASSIGNED: _ClassVar[ExecutionState]
    EXECUTION_STATE_ACCEPTED: _ClassVar[ExecutionState]
    EXECUTION_STATE_RUNNING: _ClassVar[ExecutionState]
    EXECUTION_STATE_UPLOADING: _ClassVar[ExecutionState]
    EXECUTION_STATE_SUCCEEDED: _ClassVar[ExecutionState]
    EXECUTION_STATE_FAILED: _ClassVar[ExecutionState]
    EXECUTION_STATE_CANCELED: _ClassVar[ExecutionState]

class FailureClass(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_CLASS_UNSPECIFIED: _ClassVar[FailureClass]
    FAILURE_CLASS_DOWNLOAD: _ClassVar[FailureClass]
    FAILURE_CLASS_RUN: _ClassVar[FailureClass]
    FAILURE_CLASS_UPLOAD: _ClassVar[FailureClass]
    FAILURE_CLASS_LOST: _ClassVar[FailureClass]
    FAILURE_CLASS_KILLED: _ClassVar[FailureClass]
    FAILURE_CLASS_TIMEOUT: _ClassVar[FailureClass]
    FAILURE_CLASS_RECALLED: _ClassVar[FailureClass]

class OutputStream(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_STREAM_STDOUT: _ClassVar[OutputStream]
    OUTPUT_STREAM_STDERR: _ClassVar[OutputStream]

class WorkerStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_STATUS_UNSPECIFIED: _ClassVar[WorkerStatus]
    WORKER_STATUS_ONLINE: _ClassVar[WorkerStatus]
    WORKER_STATUS_OFFLINE: _ClassVar[WorkerStatus]
    WORKER_STATUS_LOST: _ClassVar[WorkerStatus]

class Signal(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIGNAL_UNSPECIFIED: _ClassVar[Signal]
    SIGNAL_TERM: _ClassVar[Signal]
    SIGNAL_KILL: _ClassVar[Signal]
    SIGNAL_PAUSE: _ClassVar[Signal]
    SIGNAL_RESUME: _ClassVar[Signal]
    SIGNAL_CANCEL: _ClassVar[Signal]
    SIGNAL_RECALL: _ClassVar[Signal]

class ProtocolVersion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROTOCOL_VERSION_UNSPECIFIED: _ClassVar[ProtocolVersion]
    PROTOCOL_VERSION_1: _ClassVar[ProtocolVersion]
TASK_STATUS_UNSPECIFIED: TaskStatus
TASK_STATUS_WAITING: TaskStatus
TASK_STATUS_PENDING: TaskStatus
TASK_STATUS_ASSIGNED: TaskStatus
TASK_STATUS_ACCEPTED: TaskStatus
TASK_STATUS_RUNNING: TaskStatus
TASK_STATUS_UPLOADING: TaskStatus
TASK_STATUS_SUCCEEDED: TaskStatus
TASK_STATUS_FAILED: TaskStatus
TASK_STATUS_PAUSED: TaskStatus
TASK_STATUS_CANCELED: TaskStatus
SHELL_NONE: Shell
SHELL_SH: Shell
SHELL_BASH: Shell
EXECUTION_STATE_UNSPECIFIED: ExecutionState
EXECUTION_STATE_ASSIGNED: ExecutionState
EXECUTION_STATE_ACCEPTED: ExecutionState
EXECUTION_STATE_RUNNING: ExecutionState
EXECUTION_STATE_UPLOADING: ExecutionState
EXECUTION_STATE_SUCCEEDED: ExecutionState
EXECUTION_STATE_FAILED: ExecutionState
EXECUTION_STATE_CANCELED: ExecutionState
FAILURE_CLASS_UNSPECIFIED: FailureClass
FAILURE_CLASS_DOWNLOAD: FailureClass
FAILURE_CLASS_RUN: FailureClass
FAILURE_CLASS_UPLOAD: FailureClass
FAILURE_CLASS_LOST: FailureClass
FAILURE_CLASS_KILLED: FailureClass
FAILURE_CLASS_TIMEOUT: FailureClass
FAILURE_CLASS_RECALLED: FailureClass
OUTPUT_STREAM_STDOUT: OutputStream
OUTPUT_STREAM_STDERR: OutputStream
WORKER_STATUS_UNSPECIFIED: WorkerStatus
WORKER_STATUS_ONLINE: WorkerStatus
WORKER_STATUS_OFFLINE: WorkerStatus
WORKER_STATUS_LOST: WorkerStatus
SIGNAL_UNSPECIFIED: Signal
SIGNAL_TERM: Signal
SIGNAL_KILL: Signal
SIGNAL_PAUSE: Signal
SIGNAL_RESUME: Signal
SIGNAL_CANCEL: Signal
SIGNAL_RECALL: Signal
PROTOCOL_VERSION_UNSPECIFIED: ProtocolVersion
PROTOCOL_VERSION_1: ProtocolVersion

class TaskSpec(_message.Message):
    __slots__ = ("name", "batch", "command", "shell", "container", "container_options", "inputs", "output", "resources", "retry", "priority", "run_timeout_s", "depends_on")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    SHELL_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    RUN_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    name: str
    batch: str
    command: str
    shell: Shell
    container: str
    container_options: _containers.RepeatedScalarFieldContainer[str]
    inputs: _containers.RepeatedScalarFieldContainer[str]
    output: str
    resources: _containers.RepeatedScalarFieldContainer[str]
    retry: int
    priority: int
    run_timeout_s: int
    depends_on: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., batch: _Optional[str] = ..., command: _Optional[str] = ..., shell: _Optional[_Union[Shell, str]] = ..., container: _Optional[str] = ..., container_options: _Optional[_Iterable[str]] = ..., inputs: _Optional[_Iterable[str]] = ..., output: _Optional[str] = ..., resources: _Optional[_Iterable[str]] = ..., retry: _Optional[int] = ..., priority: _Optional[int] = ..., run_timeout_s: _Optional[int] = ..., depends_on: _Optional[_Iterable[int]] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("id", "spec", "status", "status_reason", "retry_left", "execution_id", "worker_id", "exit_code", "created_at", "updated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_REASON_FIELD_NUMBER: _ClassVar[int]
    RETRY_LEFT_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: int
    spec: TaskSpec
    status: TaskStatus
    status_reason: str
    retry_left: int
    execution_id: int
    worker_id: int
    exit_code: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., spec: _Optional[_Union[TaskSpec, _Mapping]] = ..., status: _Optional[_Union[TaskStatus, str]] = ..., status_reason: _Optional[str] = ..., retry_left: _Optional[int] = ..., execution_id: _Optional[int] = ..., worker_id: _Optional[int] = ..., exit_code: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Execution(_message.Message):
    __slots__ = ("id", "task_id", "worker_id", "worker_name", "state", "command", "shell", "exit_code", "failure", "message", "assigned_at", "started_at", "finished_at", "stdout_bytes", "stderr_bytes", "uploaded")
    ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    SHELL_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    STDOUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    STDERR_BYTES_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_FIELD_NUMBER: _ClassVar[int]
    id: int
    task_id: int
    worker_id: int
    worker_name: str
    state: ExecutionState
    command: str
    shell: Shell
    exit_code: int
    failure: FailureClass
    message: str
    assigned_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    stdout_bytes: int
    stderr_bytes: int
    uploaded: _containers.RepeatedCompositeFieldContainer[UploadedFile]
    def __init__(self, id: _Optional[int] = ..., task_id: _Optional[int] = ..., worker_id: _Optional[int] = ..., worker_name: _Optional[str] = ..., state: _Optional[_Union[ExecutionState, str]] = ..., command: _Optional[str] = ..., shell: _Optional[_Union[Shell, str]] = ..., exit_code: _Optional[int] = ..., failure: _Optional[_Union[FailureClass, str]] = ..., message: _Optional[str] = ..., assigned_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stdout_bytes: _Optional[int] = ..., stderr_bytes: _Optional[int] = ..., uploaded: _Optional[_Iterable[_Union[UploadedFile, _Mapping]]] = ...) -> None: ...

class UploadedFile(_message.Message):
    __slots__ = ("uri", "size")
    URI_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    uri: str
    size: int
    def __init__(self, uri: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class OutputChunk(_message.Message):
    __slots__ = ("execution_id", "stream", "offset", "data")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    execution_id: int
    stream: OutputStream
    offset: int
    data: bytes
    def __init__(self, execution_id: _Optional[int] = ..., stream: _Optional[_Union[OutputStream, str]] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class Worker(_message.Message):
    __slots__ = ("id", "name", "host", "concurrency", "prefetch", "batch", "status", "active", "last_contact", "paused", "draining", "prefetch_auto", "provider", "flavor", "region", "state")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    LAST_CONTACT_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_AUTO_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    FLAVOR_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    host: str
    concurrency: int
    prefetch: int
    batch: str
    status: WorkerStatus
    active: int
    last_contact: _timestamp_pb2.Timestamp
    paused: bool
    draining: bool
    prefetch_auto: bool
    provider: str
    flavor: str
    region: str
    state: str
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., host: _Optional[str] = ..., concurrency: _Optional[int] = ..., prefetch: _Optional[int] = ..., batch: _Optional[str] = ..., status: _Optional[_Union[WorkerStatus, str]] = ..., active: _Optional[int] = ..., last_contact: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., paused: _Optional[bool] = ..., draining: _Optional[bool] = ..., prefetch_auto: _Optional[bool] = ..., provider: _Optional[str] = ..., flavor: _Optional[str] = ..., region: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class CreateTasksRequest(_message.Message):
    __slots__ = ("tasks", "resume")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskSpec]
    resume: bool
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskSpec, _Mapping]]] = ..., resume: _Optional[bool] = ...) -> None: ...

class CreateTasksResponse(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("batch", "status", "name", "ids", "after_id", "limit")
    BATCH_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    batch: str
    status: _containers.RepeatedScalarFieldContainer[TaskStatus]
    name: str
    ids: _containers.RepeatedScalarFieldContainer[int]
    after_id: int
    limit: int
    def __init__(self, batch: _Optional[str] = ..., status: _Optional[_Iterable[_Union[TaskStatus, str]]] = ..., name: _Optional[str] = ..., ids: _Optional[_Iterable[int]] = ..., after_id: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "next_after_id")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    next_after_id: int
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., next_after_id: _Optional[int] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class RelaunchTaskRequest(_message.Message):
    __slots__ = ("id", "command")
    ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    id: int
    command: str
    def __init__(self, id: _Optional[int] = ..., command: _Optional[str] = ...) -> None: ...

class TaskRef(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class ExplainTaskResponse(_message.Message):
    __slots__ = ("status", "reasons")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    status: TaskStatus
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, status: _Optional[_Union[TaskStatus, str]] = ..., reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class TaskSelector(_message.Message):
    __slots__ = ("ids", "batch", "status", "name", "all")
    IDS_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    batch: str
    status: _containers.RepeatedScalarFieldContainer[TaskStatus]
    name: str
    all: bool
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., batch: _Optional[str] = ..., status: _Optional[_Iterable[_Union[TaskStatus, str]]] = ..., name: _Optional[str] = ..., all: _Optional[bool] = ...) -> None: ...

class TaskChanges(_message.Message):
    __slots__ = ("command", "shell", "container", "container_options", "inputs", "output", "resources", "retry", "priority", "name", "run_timeout_s", "batch")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    SHELL_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RUN_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    command: str
    shell: Shell
    container: str
    container_options: StringList
    inputs: StringList
    output: str
    resources: StringList
    retry: int
    priority: int
    name: str
    run_timeout_s: int
    batch: str
    def __init__(self, command: _Optional[str] = ..., shell: _Optional[_Union[Shell, str]] = ..., container: _Optional[str] = ..., container_options: _Optional[_Union[StringList, _Mapping]] = ..., inputs: _Optional[_Union[StringList, _Mapping]] = ..., output: _Optional[str] = ..., resources: _Optional[_Union[StringList, _Mapping]] = ..., retry: _Optional[int] = ..., priority: _Optional[int] = ..., name: _Optional[str] = ..., run_timeout_s: _Optional[int] = ..., batch: _Optional[str] = ...) -> None: ...

class StringList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class EditTasksRequest(_message.Message):
    __slots__ = ("selector", "changes", "dry_run")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    selector: TaskSelector
    changes: TaskChanges
    dry_run: bool
    def __init__(self, selector: _Optional[_Union[TaskSelector, _Mapping]] = ..., changes: _Optional[_Union[TaskChanges, _Mapping]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class EditTasksResponse(_message.Message):
    __slots__ = ("tasks", "dry_run")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    dry_run: bool
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("name", "stopped", "counts", "suspended")
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    STOPPED_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    SUSPENDED_FIELD_NUMBER: _ClassVar[int]
    name: str
    stopped: bool
    counts: _containers.ScalarMap[str, int]
    suspended: bool
    def __init__(self, name: _Optional[str] = ..., stopped: _Optional[bool] = ..., counts: _Optional[_Mapping[str, int]] = ..., suspended: _Optional[bool] = ...) -> None: ...

class SuspendBatchRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListBatchesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBatchesResponse(_message.Message):
    __slots__ = ("batches",)
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    batches: _containers.RepeatedCompositeFieldContainer[Batch]
    def __init__(self, batches: _Optional[_Iterable[_Union[Batch, _Mapping]]] = ...) -> None: ...

class StopBatchRequest(_message.Message):
    __slots__ = ("name", "signal")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    signal: Signal
    def __init__(self, name: _Optional[str] = ..., signal: _Optional[_Union[Signal, str]] = ...) -> None: ...

class GoBatchRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteBatchRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteBatchResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class DeleteTaskResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListExecutionsRequest(_message.Message):
    __slots__ = ("task_id", "batch", "state", "worker_id", "after_id", "limit")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    batch: str
    state: _containers.RepeatedScalarFieldContainer[ExecutionState]
    worker_id: int
    after_id: int
    limit: int
    def __init__(self, task_id: _Optional[int] = ..., batch: _Optional[str] = ..., state: _Optional[_Iterable[_Union[ExecutionState, str]]] = ..., worker_id: _Optional[int] = ..., after_id: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ListExecutionsResponse(_message.Message):
    __slots__ = ("executions", "next_after_id")
    EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    executions: _containers.RepeatedCompositeFieldContainer[Execution]
    next_after_id: int
    def __init__(self, executions: _Optional[_Iterable[_Union[Execution, _Mapping]]] = ..., next_after_id: _Optional[int] = ...) -> None: ...

class GetOutputRequest(_message.Message):
    __slots__ = ("task_id", "execution_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    execution_id: int
    def __init__(self, task_id: _Optional[int] = ..., execution_id: _Optional[int] = ...) -> None: ...

class GetOutputResponse(_message.Message):
    __slots__ = ("execution_id", "chunks")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    execution_id: int
    chunks: _containers.RepeatedCompositeFieldContainer[OutputChunk]
    def __init__(self, execution_id: _Optional[int] = ..., chunks: _Optional[_Iterable[_Union[OutputChunk, _Mapping]]] = ...) -> None: ...

class FollowOutputRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    def __init__(self, task_id: _Optional[int] = ...) -> None: ...

class GetStorageConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StorageConfig(_message.Message):
    __slots__ = ("rclone_config",)
    RCLONE_CONFIG_FIELD_NUMBER: _ClassVar[int]
    rclone_config: str
    def __init__(self, rclone_config: _Optional[str] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers", "deploying")
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    DEPLOYING_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[Worker]
    deploying: _containers.RepeatedCompositeFieldContainer[Machine]
    def __init__(self, workers: _Optional[_Iterable[_Union[Worker, _Mapping]]] = ..., deploying: _Optional[_Iterable[_Union[Machine, _Mapping]]] = ...) -> None: ...

class UpdateWorkerRequest(_message.Message):
    __slots__ = ("id", "concurrency", "prefetch", "prefetch_auto", "batch", "paused")
    ID_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_AUTO_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    id: int
    concurrency: int
    prefetch: int
    prefetch_auto: bool
    batch: str
    paused: bool
    def __init__(self, id: _Optional[int] = ..., concurrency: _Optional[int] = ..., prefetch: _Optional[int] = ..., prefetch_auto: _Optional[bool] = ..., batch: _Optional[str] = ..., paused: _Optional[bool] = ...) -> None: ...

class WorkerRef(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class DeleteWorkerResponse(_message.Message):
    __slots__ = ("destroying",)
    DESTROYING_FIELD_NUMBER: _ClassVar[int]
    destroying: str
    def __init__(self, destroying: _Optional[str] = ...) -> None: ...

class IssueEnrollmentTokenRequest(_message.Message):
    __slots__ = ("name", "ttl_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    ttl_seconds: int
    def __init__(self, name: _Optional[str] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class EnrollmentToken(_message.Message):
    __slots__ = ("token", "name", "expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    name: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, token: _Optional[str] = ..., name: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("seq", "hello", "heartbeat", "update", "output", "prefetch")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_FIELD_NUMBER: _ClassVar[int]
    seq: int
    hello: Hello
    heartbeat: Heartbeat
    update: ExecutionUpdate
    output: OutputChunk
    prefetch: Prefetch
    def __init__(self, seq: _Optional[int] = ..., hello: _Optional[_Union[Hello, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., update: _Optional[_Union[ExecutionUpdate, _Mapping]] = ..., output: _Optional[_Union[OutputChunk, _Mapping]] = ..., prefetch: _Optional[_Union[Prefetch, _Mapping]] = ...) -> None: ...

class Prefetch(_message.Message):
    __slots__ = ("prefetch",)
    PREFETCH_FIELD_NUMBER: _ClassVar[int]
    prefetch: int
    def __init__(self, prefetch: _Optional[int] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("protocol", "name", "host", "concurrency", "prefetch", "batch", "held", "credential", "instance", "prefetch_auto")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_AUTO_FIELD_NUMBER: _ClassVar[int]
    protocol: ProtocolVersion
    name: str
    host: str
    concurrency: int
    prefetch: int
    batch: str
    held: _containers.RepeatedCompositeFieldContainer[HeldExecution]
    credential: str
    instance: str
    prefetch_auto: bool
    def __init__(self, protocol: _Optional[_Union[ProtocolVersion, str]] = ..., name: _Optional[str] = ..., host: _Optional[str] = ..., concurrency: _Optional[int] = ..., prefetch: _Optional[int] = ..., batch: _Optional[str] = ..., held: _Optional[_Iterable[_Union[HeldExecution, _Mapping]]] = ..., credential: _Optional[str] = ..., instance: _Optional[str] = ..., prefetch_auto: _Optional[bool] = ...) -> None: ...

class HeldExecution(_message.Message):
    __slots__ = ("execution_id", "state")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    execution_id: int
    state: ExecutionState
    def __init__(self, execution_id: _Optional[int] = ..., state: _Optional[_Union[ExecutionState, str]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("load", "mem_available_bytes", "disk_available_bytes", "cpu_percent", "cpus", "mem_total_bytes", "disk_total_bytes")
    LOAD_FIELD_NUMBER: _ClassVar[int]
    MEM_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEM_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    load: float
    mem_available_bytes: int
    disk_available_bytes: int
    cpu_percent: float
    cpus: int
    mem_total_bytes: int
    disk_total_bytes: int
    def __init__(self, load: _Optional[float] = ..., mem_available_bytes: _Optional[int] = ..., disk_available_bytes: _Optional[int] = ..., cpu_percent: _Optional[float] = ..., cpus: _Optional[int] = ..., mem_total_bytes: _Optional[int] = ..., disk_total_bytes: _Optional[int] = ...) -> None: ...

class ExecutionUpdate(_message.Message):
    __slots__ = ("execution_id", "state", "exit_code", "failure", "message", "stdout_bytes", "stderr_bytes", "uploaded", "inputs")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STDOUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    STDERR_BYTES_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    execution_id: int
    state: ExecutionState
    exit_code: int
    failure: FailureClass
    message: str
    stdout_bytes: int
    stderr_bytes: int
    uploaded: _containers.RepeatedCompositeFieldContainer[UploadedFile]
    inputs: _containers.RepeatedCompositeFieldContainer[StagedInput]
    def __init__(self, execution_id: _Optional[int] = ..., state: _Optional[_Union[ExecutionState, str]] = ..., exit_code: _Optional[int] = ..., failure: _Optional[_Union[FailureClass, str]] = ..., message: _Optional[str] = ..., stdout_bytes: _Optional[int] = ..., stderr_bytes: _Optional[int] = ..., uploaded: _Optional[_Iterable[_Union[UploadedFile, _Mapping]]] = ..., inputs: _Optional[_Iterable[_Union[StagedInput, _Mapping]]] = ...) -> None: ...

class StagedInput(_message.Message):
    __slots__ = ("uri", "files")
    URI_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    uri: str
    files: _containers.RepeatedCompositeFieldContainer[RemoteFile]
    def __init__(self, uri: _Optional[str] = ..., files: _Optional[_Iterable[_Union[RemoteFile, _Mapping]]] = ...) -> None: ...

class RemoteFile(_message.Message):
    __slots__ = ("path", "size", "etag", "modified")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    MODIFIED_FIELD_NUMBER: _ClassVar[int]
    path: str
    size: int
    etag: str
    modified: str
    def __init__(self, path: _Optional[str] = ..., size: _Optional[int] = ..., etag: _Optional[str] = ..., modified: _Optional[str] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("welcome", "assignment", "settings", "signal", "ack", "drain")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    assignment: Assignment
    settings: Settings
    signal: SignalExecution
    ack: Ack
    drain: Drain
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., assignment: _Optional[_Union[Assignment, _Mapping]] = ..., settings: _Optional[_Union[Settings, _Mapping]] = ..., signal: _Optional[_Union[SignalExecution, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("worker_id", "settings", "offsets", "cancel", "rclone_config", "lease_ms")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    RCLONE_CONFIG_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    worker_id: int
    settings: Settings
    offsets: _containers.RepeatedCompositeFieldContainer[OutputOffsets]
    cancel: _containers.RepeatedScalarFieldContainer[int]
    rclone_config: str
    lease_ms: int
    def __init__(self, worker_id: _Optional[int] = ..., settings: _Optional[_Union[Settings, _Mapping]] = ..., offsets: _Optional[_Iterable[_Union[OutputOffsets, _Mapping]]] = ..., cancel: _Optional[_Iterable[int]] = ..., rclone_config: _Optional[str] = ..., lease_ms: _Optional[int] = ...) -> None: ...

class Drain(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OutputOffsets(_message.Message):
    __slots__ = ("execution_id", "stdout", "stderr")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    execution_id: int
    stdout: int
    stderr: int
    def __init__(self, execution_id: _Optional[int] = ..., stdout: _Optional[int] = ..., stderr: _Optional[int] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("execution_id", "task_id", "spec", "registry_credentials")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    execution_id: int
    task_id: int
    spec: TaskSpec
    registry_credentials: _containers.RepeatedCompositeFieldContainer[RegistryCredential]
    def __init__(self, execution_id: _Optional[int] = ..., task_id: _Optional[int] = ..., spec: _Optional[_Union[TaskSpec, _Mapping]] = ..., registry_credentials: _Optional[_Iterable[_Union[RegistryCredential, _Mapping]]] = ...) -> None: ...

class RegistryCredential(_message.Message):
    __slots__ = ("registry", "username", "password")
    REGISTRY_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    registry: str
    username: str
    password: str
    def __init__(self, registry: _Optional[str] = ..., username: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...

class Settings(_message.Message):
    __slots__ = ("concurrency", "prefetch", "batch", "prefetch_auto")
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_AUTO_FIELD_NUMBER: _ClassVar[int]
    concurrency: int
    prefetch: int
    batch: str
    prefetch_auto: bool
    def __init__(self, concurrency: _Optional[int] = ..., prefetch: _Optional[int] = ..., batch: _Optional[str] = ..., prefetch_auto: _Optional[bool] = ...) -> None: ...

class SignalExecution(_message.Message):
    __slots__ = ("execution_id", "signal")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    execution_id: int
    signal: Signal
    def __init__(self, execution_id: _Optional[int] = ..., signal: _Optional[_Union[Signal, str]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class Recruiter(_message.Message):
    __slots__ = ("id", "batch", "provider", "region", "flavor", "min_cpu", "min_mem_gib", "min_disk_gib", "gpu", "max_workers", "rounds", "concurrency", "prefetch", "idle_timeout_s", "paused", "paused_reason", "failures", "machines")
    ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    FLAVOR_FIELD_NUMBER: _ClassVar[int]
    MIN_CPU_FIELD_NUMBER: _ClassVar[int]
    MIN_MEM_GIB_FIELD_NUMBER: _ClassVar[int]
    MIN_DISK_GIB_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    MAX_WORKERS_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    PAUSED_REASON_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    MACHINES_FIELD_NUMBER: _ClassVar[int]
    id: int
    batch: str
    provider: str
    region: str
    flavor: str
    min_cpu: int
    min_mem_gib: int
    min_disk_gib: int
    gpu: int
    max_workers: int
    rounds: int
    concurrency: int
    prefetch: int
    idle_timeout_s: int
    paused: bool
    paused_reason: str
    failures: int
    machines: int
    def __init__(self, id: _Optional[int] = ..., batch: _Optional[str] = ..., provider: _Optional[str] = ..., region: _Optional[str] = ..., flavor: _Optional[str] = ..., min_cpu: _Optional[int] = ..., min_mem_gib: _Optional[int] = ..., min_disk_gib: _Optional[int] = ..., gpu: _Optional[int] = ..., max_workers: _Optional[int] = ..., rounds: _Optional[int] = ..., concurrency: _Optional[int] = ..., prefetch: _Optional[int] = ..., idle_timeout_s: _Optional[int] = ..., paused: _Optional[bool] = ..., paused_reason: _Optional[str] = ..., failures: _Optional[int] = ..., machines: _Optional[int] = ...) -> None: ...

class CreateRecruiterRequest(_message.Message):
    __slots__ = ("batch", "provider", "region", "flavor", "min_cpu", "min_mem_gib", "min_disk_gib", "gpu", "max_workers", "rounds", "concurrency", "prefetch", "idle_timeout_s")
    BATCH_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    FLAVOR_FIELD_NUMBER: _ClassVar[int]
    MIN_CPU_FIELD_NUMBER: _ClassVar[int]
    MIN_MEM_GIB_FIELD_NUMBER: _ClassVar[int]
    MIN_DISK_GIB_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    MAX_WORKERS_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    batch: str
    provider: str
    region: str
    flavor: str
    min_cpu: int
    min_mem_gib: int
    min_disk_gib: int
    gpu: int
    max_workers: int
    rounds: int
    concurrency: int
    prefetch: int
    idle_timeout_s: int
    def __init__(self, batch: _Optional[str] = ..., provider: _Optional[str] = ..., region: _Optional[str] = ..., flavor: _Optional[str] = ..., min_cpu: _Optional[int] = ..., min_mem_gib: _Optional[int] = ..., min_disk_gib: _Optional[int] = ..., gpu: _Optional[int] = ..., max_workers: _Optional[int] = ..., rounds: _Optional[int] = ..., concurrency: _Optional[int] = ..., prefetch: _Optional[int] = ..., idle_timeout_s: _Optional[int] = ...) -> None: ...

class RecruiterRef(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class ListRecruitersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRecruitersResponse(_message.Message):
    __slots__ = ("recruiters",)
    RECRUITERS_FIELD_NUMBER: _ClassVar[int]
    recruiters: _containers.RepeatedCompositeFieldContainer[Recruiter]
    def __init__(self, recruiters: _Optional[_Iterable[_Union[Recruiter, _Mapping]]] = ...) -> None: ...

class DeleteRecruiterResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Flavor(_message.Message):
    __slots__ = ("provider", "name", "cpu", "memory_mib", "disk_gib", "gpu", "price_per_hour")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    DISK_GIB_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    provider: str
    name: str
    cpu: int
    memory_mib: int
    disk_gib: int
    gpu: int
    price_per_hour: float
    def __init__(self, provider: _Optional[str] = ..., name: _Optional[str] = ..., cpu: _Optional[int] = ..., memory_mib: _Optional[int] = ..., disk_gib: _Optional[int] = ..., gpu: _Optional[int] = ..., price_per_hour: _Optional[float] = ...) -> None: ...

class ListFlavorsRequest(_message.Message):
    __slots__ = ("provider", "min_cpu", "min_mem_gib", "min_disk_gib", "gpu")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MIN_CPU_FIELD_NUMBER: _ClassVar[int]
    MIN_MEM_GIB_FIELD_NUMBER: _ClassVar[int]
    MIN_DISK_GIB_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    provider: str
    min_cpu: int
    min_mem_gib: int
    min_disk_gib: int
    gpu: int
    def __init__(self, provider: _Optional[str] = ..., min_cpu: _Optional[int] = ..., min_mem_gib: _Optional[int] = ..., min_disk_gib: _Optional[int] = ..., gpu: _Optional[int] = ...) -> None: ...

class ListFlavorsResponse(_message.Message):
    __slots__ = ("flavors", "errors")
    FLAVORS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    flavors: _containers.RepeatedCompositeFieldContainer[Flavor]
    errors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, flavors: _Optional[_Iterable[_Union[Flavor, _Mapping]]] = ..., errors: _Optional[_Iterable[str]] = ...) -> None: ...

class Machine(_message.Message):
    __slots__ = ("id", "name", "provider", "region", "flavor", "state", "recruiter_id", "batch", "created_at", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    FLAVOR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RECRUITER_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    provider: str
    region: str
    flavor: str
    state: str
    recruiter_id: int
    batch: str
    created_at: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., provider: _Optional[str] = ..., region: _Optional[str] = ..., flavor: _Optional[str] = ..., state: _Optional[str] = ..., recruiter_id: _Optional[int] = ..., batch: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class DeployWorkersRequest(_message.Message):
    __slots__ = ("provider", "flavor", "region", "count", "batch", "concurrency", "prefetch")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    FLAVOR_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_FIELD_NUMBER: _ClassVar[int]
    provider: str
    flavor: str
    region: str
    count: int
    batch: str
    concurrency: int
    prefetch: int
    def __init__(self, provider: _Optional[str] = ..., flavor: _Optional[str] = ..., region: _Optional[str] = ..., count: _Optional[int] = ..., batch: _Optional[str] = ..., concurrency: _Optional[int] = ..., prefetch: _Optional[int] = ...) -> None: ...

class DeployWorkersResponse(_message.Message):
    __slots__ = ("machines",)
    MACHINES_FIELD_NUMBER: _ClassVar[int]
    machines: _containers.RepeatedCompositeFieldContainer[Machine]
    def __init__(self, machines: _Optional[_Iterable[_Union[Machine, _Mapping]]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "machine", "kind", "status", "attempts", "error_class", "log", "created_at", "updated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    MACHINE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CLASS_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: int
    machine: str
    kind: str
    status: str
    attempts: int
    error_class: str
    log: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., machine: _Optional[str] = ..., kind: _Optional[str] = ..., status: _Optional[str] = ..., attempts: _Optional[int] = ..., error_class: _Optional[str] = ..., log: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...
