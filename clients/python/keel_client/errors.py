"""Errors: the coordinator's refusals, each a class named after its protocol error type."""


class KeelError(Exception):
    """A refusal from the coordinator (``type`` is the protocol's error type), or a failure to
    reach it."""

    def __init__(self, type_, message, details=None):
        super().__init__("%s: %s" % (type_, message))
        self.type = type_
        self.message = message
        self.details = details


class NoReply(KeelError):
    """No coordinator answered within the timeout (is ``keel coordinator`` running?)."""

    def __init__(self, message):
        super().__init__("NoReply", message)


class WorkflowNotFound(KeelError):
    pass


class WorkflowAlreadyStarted(KeelError):
    pass


class UnknownWorkflowType(KeelError):
    pass


class InvalidOptions(KeelError):
    pass


class InvalidSchedule(KeelError):
    pass


class ScheduleNotFound(KeelError):
    pass


class ActivityNotParked(KeelError):
    pass


class NotBlocked(KeelError):
    pass


class QueryFailed(KeelError):
    """The workflow has no such query, or its handler failed."""


class LimitExceeded(KeelError):
    """A field of the job is over the protocol's limits (docs/protocol.md, Limits)."""


class BadMessage(KeelError):
    """The job could not be read (not JSON, a field missing or of the wrong type)."""


class WorkflowFailed(KeelError):
    """A run awaited with ``wait=True`` ended otherwise than completed. ``run`` is its record."""

    def __init__(self, run):
        failure = run.get("failure") or {}
        super().__init__(
            failure.get("type", run.get("status", "failed")),
            "workflow %s %s: %s" % (run.get("workflowId"), run.get("status"), failure.get("message", "")),
            failure.get("details"),
        )
        self.run = run
        self.status = run.get("status")


_BY_TYPE = {
    "WorkflowNotFound": WorkflowNotFound,
    "WorkflowAlreadyStarted": WorkflowAlreadyStarted,
    "UnknownWorkflowType": UnknownWorkflowType,
    "InvalidOptions": InvalidOptions,
    "InvalidSchedule": InvalidSchedule,
    "ScheduleNotFound": ScheduleNotFound,
    "ActivityNotParked": ActivityNotParked,
    "NotBlocked": NotBlocked,
    "QueryFailed": QueryFailed,
    "LimitExceeded": LimitExceeded,
    "BadMessage": BadMessage,
}


def from_reply(error):
    """The exception for the ``error`` object of a refused reply."""
    error = error or {}
    kind = error.get("type", "KeelError")
    return _BY_TYPE.get(kind, KeelError)(kind, error.get("message", ""), error.get("details"))
