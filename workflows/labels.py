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

# Exit codes shared by the step programs, the engines and the status mapping.
EXIT_DATA_FAILED = 31  # input-fetch: a dataset file could not be fetched
EXIT_ALGORITHM_FAILED = 32  # input-fetch: the algorithm could not be fetched
EXIT_TEMPFAIL = 75  # transient error after the step's own retries: the engine may retry the step
EXIT_PUBLISH_FAILED = 62  # output-publish: results could not be stored

# Environment variables the templates give the fetch/publish steps (the S3 keys come from the storage Secret).
S3_ENDPOINT_ENV = "C2D_S3_ENDPOINT"
S3_REGION_ENV = "C2D_S3_REGION"
S3_ACCESS_KEY_ENV = "C2D_S3_ACCESS_KEY"
S3_SECRET_KEY_ENV = "C2D_S3_SECRET_KEY"
IPFS_API_ENV = "C2D_IPFS_API"
