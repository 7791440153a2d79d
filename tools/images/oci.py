"""Helpers of tools/images/build.sh (standard library only; any Python >= 3.11).

oci.py version PYPROJECT                  the project's version (the node image's tag)
oci.py lock REPORT LOCK                   write the pins of a `pip install --dry-run --report` to LOCK
oci.py check-lock LOCK FREEZE             compare what pip installed with the lock (one line per difference)
oci.py name-image LAYOUT REF              annotate the layout's image so `ctr images import` names it REF
oci.py record IMAGES_JSON NAME KEY=VALUE...   add or replace an image's entry in images.json
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

LOCK_HEADER = """\
# Pinned Python dependencies of the c2d-node image (the project's runtime dependencies, resolved for
# CPython 3.11 on Debian bookworm). Read by tools/images/build.sh and by the Containerfile
# (pip install -c), so both images hold the same versions.
# Regenerate after changing pyproject.toml's dependencies: tools/images/build.sh lock
"""


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(text: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise SystemExit(f"error: not a pin (name==version): {raw!r}")
        pins[_canonical(name.split("[", 1)[0])] = version.strip()
    return pins


def version(pyproject: Path) -> None:
    with pyproject.open("rb") as handle:
        sys.stdout.write(tomllib.load(handle)["project"]["version"] + "\n")


def lock(report: Path, out: Path) -> None:
    data = json.loads(report.read_text())
    pins = sorted(
        (_canonical(item["metadata"]["name"]), item["metadata"]["version"])
        for item in data["install"]
        if _canonical(item["metadata"]["name"]) != "c2d-node"
    )
    out.write_text(LOCK_HEADER + "".join(f"{name}=={ver}\n" for name, ver in pins))
    sys.stdout.write(f"{len(pins)} pins written to {out}\n")


def check_lock(lock_file: Path, freeze: Path) -> None:
    locked = _pins(lock_file.read_text())
    installed = {name: ver for name, ver in _pins(freeze.read_text()).items() if name != "c2d-node"}
    for name in sorted(set(locked) | set(installed)):
        if name not in locked:
            sys.stdout.write(f"{name}=={installed[name]} installed but not in the lock\n")
        elif name not in installed:
            sys.stdout.write(f"{name}=={locked[name]} in the lock but not installed\n")
        elif locked[name] != installed[name]:
            sys.stdout.write(f"{name}: {installed[name]} installed, {locked[name]} locked\n")


def name_image(layout: Path, ref: str) -> None:
    """containerd names an imported image after io.containerd.image.name (else it needs --base-name);
    org.opencontainers.image.ref.name keeps the tag alone, as `ctr images export` writes it."""
    index_file = layout / "index.json"
    index: dict[str, Any] = json.loads(index_file.read_text())
    manifests = index.get("manifests", [])
    if len(manifests) != 1:
        raise SystemExit(f"error: {index_file} should list one image, not {len(manifests)}")
    tag = ref.rsplit(":", 1)[1]
    manifests[0]["annotations"] = {
        "io.containerd.image.name": ref,
        "org.opencontainers.image.ref.name": tag,
    }
    index_file.write_text(json.dumps(index, sort_keys=True, separators=(",", ":")))
    sys.stdout.write(manifests[0]["digest"] + "\n")


INT_KEYS = {"size_packed", "size_unpacked", "build_seconds"}


def record(images_json: Path, name: str, pairs: list[str]) -> None:
    data: dict[str, Any] = json.loads(images_json.read_text()) if images_json.exists() else {}
    entries = [entry for entry in data.get("images", []) if entry.get("name") != name]
    entry: dict[str, Any] = {"name": name}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: not KEY=VALUE: {pair!r}")
        entry[key] = int(text) if key in INT_KEYS else text
    entries.append(entry)
    data["images"] = sorted(entries, key=lambda item: str(item["name"]))
    tmp = images_json.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(images_json)


def main(argv: list[str]) -> None:
    match argv:
        case ["version", pyproject]:
            version(Path(pyproject))
        case ["lock", report, out]:
            lock(Path(report), Path(out))
        case ["check-lock", lock_file, freeze]:
            check_lock(Path(lock_file), Path(freeze))
        case ["name-image", layout, ref]:
            name_image(Path(layout), ref)
        case ["record", images_json, name, *pairs]:
            record(Path(images_json), name, pairs)
        case _:
            raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
