"""Where data comes from and results go: guarded URLs, S3-compatible stores (MinIO) and IPFS (Kubo).

Shared by the step programs (input-fetch, output-publish) and the provider (fileinfo, computeResult,
results retention). Nothing here reads settings: callers pass what they need.
"""
