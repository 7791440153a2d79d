"""What the step programs and the engines agree on: exit codes, environment variables, Ocean's folder names.

The engines (``workflows``) render these into the Workflow's templates and read them back; the step programs
(``steps``) read and return them. One home, below both.
"""

# Exit codes of the step programs; the engines map them to Ocean statuses.
EXIT_DATA_FAILED = 31  # input-fetch: a dataset file could not be fetched
EXIT_ALGORITHM_FAILED = 32  # input-fetch: the algorithm could not be fetched
EXIT_TEMPFAIL = 75  # transient error after the step's own retries: the engine may retry the step
EXIT_PUBLISH_FAILED = 62  # output-publish: results could not be stored

# Environment variables the templates give the fetch/publish steps (the S3 keys come from the storage Secret).
FETCH_SPEC_ENV = "C2D_FETCH_SPEC"  # input-fetch's instructions: a FetchSpec as JSON
S3_ENDPOINT_ENV = "C2D_S3_ENDPOINT"
S3_REGION_ENV = "C2D_S3_REGION"
S3_ACCESS_KEY_ENV = "C2D_S3_ACCESS_KEY"
S3_SECRET_KEY_ENV = "C2D_S3_SECRET_KEY"
IPFS_API_ENV = "C2D_IPFS_API"


def did_folder(did: str) -> str:
    """Ocean's folder name for a DID under /data/inputs and /data/ddos: the hex part."""
    return did.removeprefix("did:op:")
