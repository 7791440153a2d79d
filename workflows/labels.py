"""Names of the labels and annotations the Workflow objects carry.

The engines read them back: ``STAGE`` maps a step to its Ocean status, ``EGRESS`` tells the local
engine whether a step may use the network (on Kubernetes the NetworkPolicy selects on it).
"""

PREFIX = "c2d.oceanprotocol.com"

JOB_ID = f"{PREFIX}/job-id"
OWNER = f"{PREFIX}/owner"
ENVIRONMENT = f"{PREFIX}/environment"
INPUT_DIDS = f"{PREFIX}/input-dids"  # annotation (DIDs are longer than a label value may be)
ALGORITHM_DID = f"{PREFIX}/algorithm-did"  # annotation

STAGE = f"{PREFIX}/stage"  # template annotation: configure | algorithm | filter | publish
EGRESS = f"{PREFIX}/egress"  # template label: "allowed" or "denied" (default)
ROLE = f"{PREFIX}/role"  # template label: step | algorithm
MAX_FILES = f"{PREFIX}/max-files"  # template annotation: files the step may leave in outputs
PIDS = f"{PREFIX}/pids"  # template annotation: processes/threads the step may have at once

STAGES = ("configure", "algorithm", "filter", "publish")

# The Workflow parameter that carries input-fetch's instructions (a FetchSpec as JSON); on Argo its value
# lives in a Secret under the same key.
FETCH_SPEC_PARAMETER = "fetch-spec"
FETCH_SPEC_REFERENCE = "{{workflow.parameters.fetch-spec}}"
GPU_RESOURCE = "nvidia.com/gpu"  # the device plugin's extended resource: whole GPUs of a container
