"""The node's container image reference (docs/images.md).

One source of truth for the tag: the project's version in pyproject.toml, never ``latest`` (a ``latest``
tag makes the kubelet pull on every start). ``make images`` (tools/images/build.sh) and the Containerfile
build ``localhost/c2d-node:<version>``; the manifests, the engine's step image and the rendered Workflows
name the same reference. Operators who push it to a registry of their own retag it (kustomize ``images:``
and ``C2D_ENGINE__STEP_IMAGE``).
"""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REGISTRY = "localhost"  # where `make images`, podman and buildah put local images; imports into containerd as is
NODE_IMAGE = f"{REGISTRY}/c2d-node"
_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def project_version() -> str:
    """pyproject.toml's version in a source checkout (an editable install's metadata may be older);
    the installed distribution's version elsewhere (the image)."""
    if _PYPROJECT.is_file():
        with _PYPROJECT.open("rb") as handle:
            project = tomllib.load(handle).get("project", {})
        if project.get("name") == "c2d-node" and isinstance(project.get("version"), str):
            return str(project["version"])
    try:
        return version("c2d-node")
    except PackageNotFoundError:
        return "0.0.0"  # neither a checkout nor installed: never the case of a running node


def node_image() -> str:
    """The versioned reference of the node image, e.g. ``localhost/c2d-node:0.1.0``."""
    return f"{NODE_IMAGE}:{project_version()}"
