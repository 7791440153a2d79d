"""Chain access: the Ocean contract artifacts, a small transaction client, deployment and signing."""
