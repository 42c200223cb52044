"""Keel from Python: a client for the coordinator's jobs and a worker for activities, over
RabbitMQ with pika, following Keel's wire protocol version 1 (docs/protocol.md)."""
from .client import Client, StartResult
from .errors import (ActivityNotParked, BadMessage, InvalidOptions, InvalidSchedule, KeelError, LimitExceeded,
                     NoReply, NotBlocked, QueryFailed, ScheduleNotFound, UnknownWorkflowType, WorkflowAlreadyStarted,
                     WorkflowFailed, WorkflowNotFound)
from .worker import ActivityContext, ActivityError, Cancelled, Worker

__all__ = [
    "Client", "StartResult", "Worker", "ActivityContext", "ActivityError", "Cancelled", "KeelError", "NoReply",
    "WorkflowNotFound", "WorkflowAlreadyStarted", "UnknownWorkflowType", "InvalidOptions", "InvalidSchedule",
    "ScheduleNotFound", "ActivityNotParked", "NotBlocked", "QueryFailed", "LimitExceeded", "BadMessage",
    "WorkflowFailed",
]
