"""Errors of the workflows package (building Workflow objects and running them)."""


class WorkflowError(Exception):
    """Base class of every error raised by ``workflows``."""


class UnknownStepError(WorkflowError):
    """A compute environment's pipeline names a step template that is not registered."""


class UnsupportedWorkflowError(WorkflowError):
    """The local engine cannot interpret a part of a Workflow object (it says which)."""


class SandboxError(WorkflowError):
    """A sandboxed step could not be set up or started."""


class EngineError(WorkflowError):
    """The engine refused or failed an operation on a job."""
