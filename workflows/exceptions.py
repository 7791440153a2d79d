"""Errors of the workflows package (building Workflow objects and running them)."""

from c2d.exceptions import C2DError


class WorkflowError(C2DError):
    """Base class of every error raised by ``workflows``."""


class UnknownStepError(WorkflowError):
    """A compute environment's pipeline names a step template that is not registered."""


class UnsupportedWorkflowError(WorkflowError):
    """The local engine cannot interpret a part of a Workflow object (it says which)."""


class SandboxError(WorkflowError):
    """A sandboxed step could not be set up or started."""


class GpuUnavailableError(SandboxError):
    """A job's GPUs cannot be given to its sandbox: a granted device is gone from this machine, or the NVIDIA
    driver is not loaded. The message names the GPU index, never a host path."""


class EngineError(WorkflowError):
    """The engine refused or failed an operation on a job."""


class RehearsalError(WorkflowError):
    """A step program failed the warm step runner's rehearsal (a bug of the program or of the runner's sandbox)."""


class KubeConfigError(EngineError):
    """No usable Kubernetes credentials (kubeconfig or in-cluster ServiceAccount)."""


class KubeApiError(EngineError):
    """The Kubernetes API refused or failed a request. ``code`` is the HTTP status (0: no answer)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def transient(self) -> bool:
        return self.code == 0 or self.code == 429 or self.code >= 500


class KubeGoneError(KubeApiError):
    """410 Gone: the watched resourceVersion is too old; list again."""


class OffloadedNodesError(EngineError):
    """A Workflow's nodes were offloaded to Argo's database; only Argo Server can hydrate them."""

    def __init__(self, workflow: str) -> None:
        super().__init__(
            f"workflow {workflow}: nodes are offloaded (status.offloadNodeStatusVersion); "
            "set C2D_ENGINE__ARGO__SERVER_URL so the watcher can read them through Argo Server"
        )


class JobSetupError(SandboxError):
    """A job's sandbox could not be prepared (its disk, its folders): the job fails before any step runs."""
