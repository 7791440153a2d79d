"""Byte-compiles what the node's programs import, inside the c2d-node image's venv (build.sh's hook and
the Containerfile both run it: `PYTHONDONTWRITEBYTECODE=1 /opt/c2d/bin/python precompile.py`).

The pods run with a read-only root file system, so every process would compile those modules again in
memory (`c2d provider`: about 1 s of CPU more per start, measured). The rest of the venv is left as
source: most of it is the kubernetes client's generated models (51 MB of .pyc if all were compiled).
The pycs are hash-based (no timestamps), so the layer stays reproducible. Importing the modules is also
the image's smoke test: a broken install fails the build, not the first pod.
"""

from __future__ import annotations

import importlib
import py_compile
import sys

VENV = "/opt/c2d/"
HOT_MODULES = (
    "node.cli",
    "node.wiring",
    "workflows.argo.engine",
    "workflows.local.engine",
    "steps.fetch",
    "steps.publish",
    "steps.filter",
    "uvicorn.main",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.loops.uvloop",
    "uvicorn.lifespan.on",
)


def main() -> None:
    for name in HOT_MODULES:
        importlib.import_module(name)
    files = sorted(
        {
            str(module.__file__)
            for module in list(sys.modules.values())
            if str(getattr(module, "__file__", None)).startswith(VENV) and str(module.__file__).endswith(".py")
        }
    )
    for path in files:
        py_compile.compile(path, doraise=True, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    sys.stdout.write(f"{len(files)} modules of {VENV} precompiled\n")


if __name__ == "__main__":
    main()
