"""The container images (docs/images.md): `make images` builds them without Docker, they run, and every
reference to them is versioned.

The static checks (tags, manifests, Containerfile, lock) always run. The ones marked slow build the images
with tools/images/build.sh (cached in .cache/images: seconds when nothing changed, about 1.5 minutes cold
on 2 cores) and run them with bubblewrap; without root, mmdebstrap, umoci or bwrap they are skipped and
say why.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from c2d.images import NODE_IMAGE, node_image, project_version
from c2d.settings import EngineSettings
from workflows.registry import BuildOptions

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools" / "images"
BUILD = TOOLS / "build.sh"
CONTAINERFILE = REPO / "Containerfile"
LOCK = TOOLS / "node-requirements.txt"
IMAGES_JSON = Path(os.environ.get("C2D_IMAGES_DIR") or REPO / ".cache" / "images") / "images.json"  # as build.sh
NODE_UID = 10001
NOBODY = 65534


def _pyproject() -> dict[str, Any]:
    with (REPO / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def _manifest_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted((REPO / "manifests").rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict):
                yield path, document


def _containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    spec = document.get("spec", {}).get("template", {}).get("spec", {})
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def _tag_of(reference: str) -> str | None:
    """The tag of an image reference (None when it has none), ignoring a registry's port."""
    name = reference.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else None


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in LOCK.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[str(canonicalize_name(name))] = version
    return pins


# --- versioned tags, one source of truth ----------------------------------------------------------------


def test_the_node_image_is_tagged_with_the_project_version() -> None:
    version = _pyproject()["project"]["version"]
    assert project_version() == version
    assert node_image() == f"{NODE_IMAGE}:{version}" == f"localhost/c2d-node:{version}"
    assert EngineSettings().step_image == node_image()
    assert BuildOptions().step_image == node_image()


def test_no_image_reference_is_latest_or_untagged() -> None:
    references: list[tuple[str, str]] = []
    for path, document in _manifest_documents():
        for container in _containers(document):
            references.append((f"{path.relative_to(REPO)}: {container['name']}", container["image"]))
        for key, value in (document.get("data") or {}).items():
            if key.endswith("_IMAGE"):
                references.append((f"{path.relative_to(REPO)}: {key}", value))
    for line in CONTAINERFILE.read_text().splitlines():
        if line.upper().startswith("FROM "):
            references.append(("Containerfile", line.split()[1]))
    assert len(references) >= 5, references
    for where, reference in references:
        tag = _tag_of(reference)
        assert "@sha256:" in reference or (tag is not None and tag != "latest"), f"{where}: {reference} is not pinned"
        assert tag is None or re.search(r"\d", tag), f"{where}: {reference}'s tag names no version"
    # the one `latest` the manifests keep is the Pod Security Standard's version, not an image
    namespace = yaml.safe_load((REPO / "manifests" / "base" / "namespace.yaml").read_text())
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce-version"] == "latest"


def test_manifests_run_the_versioned_node_image() -> None:
    images: dict[str, tuple[str, str | None]] = {}
    step_image = None
    for _, document in _manifest_documents():
        for container in _containers(document):
            images[document["metadata"]["name"]] = (container["image"], container.get("imagePullPolicy"))
        if document.get("kind") == "ConfigMap" and document["metadata"]["name"] == "c2d-config":
            step_image = document["data"]["C2D_ENGINE__STEP_IMAGE"]
    assert images["c2d-provider"] == (node_image(), "IfNotPresent")
    assert images["c2d-watcher"] == (node_image(), "IfNotPresent")
    assert step_image == node_image()


# --- the Containerfile and `make images` install the same things ------------------------------------------


def _containerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Containerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _final_stage() -> list[tuple[str, str]]:
    instructions = _containerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_containerfile_and_build_script_read_the_same_lists() -> None:
    copied = {
        word
        for keyword, rest in _containerfile_instructions()
        if keyword == "COPY"
        for word in rest.split()
        if word.startswith("tools/images/")
    }
    shared = {"tools/images/node.packages", "tools/images/node-requirements.txt", "tools/images/precompile.py"}
    assert copied == shared
    build = BUILD.read_text()
    hook = (TOOLS / "rootfs-node.sh").read_text()
    assert '"$HERE/node.packages"' in build and "LOCK=$HERE/node-requirements.txt" in build
    assert "precompile.py" in hook and "node-requirements.txt" in hook
    # the final stage installs the package list and nothing else from apt (no build tools)
    final_runs = " ".join(rest for keyword, rest in _final_stage() if keyword == "RUN")
    assert "apt-get install" in final_runs and "node.packages" in final_runs
    assert "python3-venv" not in final_runs and "pip " not in final_runs
    copied_from_build = [rest for keyword, rest in _final_stage() if keyword == "COPY" and "--from=" in rest]
    assert copied_from_build == ["--from=build /opt/c2d /opt/c2d"]


def test_the_lock_pins_every_runtime_dependency() -> None:
    pins = _pins()
    missing, unsatisfied = [], []
    for spec in _pyproject()["project"]["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        if name not in pins:
            missing.append(spec)
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            unsatisfied.append(f"{spec} (locked {pins[name]})")
    assert not missing and not unsatisfied, (
        f"{LOCK.relative_to(REPO)} is out of date with pyproject.toml (missing: {missing}, not satisfied: "
        f"{unsatisfied}); run tools/images/build.sh lock"
    )


# --- the built images -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    entry: dict[str, Any]  # its images.json entry
    layout: Path  # the archive, extracted
    manifest: dict[str, Any]
    config: dict[str, Any]

    def blob(self, digest: str) -> bytes:
        return (self.layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def _why_not_buildable() -> str | None:
    if os.geteuid() != 0:
        return "building images needs root (mmdebstrap --mode=root, chroot)"
    for tool in ("mmdebstrap", "umoci", "bwrap"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (tools/setup_system.sh images installs mmdebstrap and umoci)"
    return None


@pytest.fixture(scope="session")
def built() -> dict[str, dict[str, Any]]:
    """tools/images/build.sh, as `make images` runs it (cached); the images.json entries by name."""
    reason = _why_not_buildable()
    if reason:
        pytest.skip(reason)
    result = subprocess.run([str(BUILD)], cwd=REPO, capture_output=True, text=True, timeout=1200, check=False)
    if result.returncode != 0:
        output = result.stdout[-3000:] + result.stderr[-3000:]
        pytest.fail(f"tools/images/build.sh failed ({result.returncode}):\n{output}")
    print(result.stdout)
    return {entry["name"]: entry for entry in json.loads(IMAGES_JSON.read_text())["images"]}


def _open(entry: dict[str, Any], into: Path) -> Image:
    with tarfile.open(REPO / entry["archive"]) as archive:
        for member in archive.getmembers():  # an OCI layout: folders and plain files (no `filter` on 3.11.2)
            assert member.isfile() or member.isdir(), member.name
            assert not member.name.startswith("/") and ".." not in Path(member.name).parts, member.name
        archive.extractall(into)
    index = json.loads((into / "index.json").read_text())
    assert len(index["manifests"]) == 1
    descriptor = index["manifests"][0]
    manifest_bytes = (into / "blobs" / "sha256" / descriptor["digest"].removeprefix("sha256:")).read_bytes()
    manifest = json.loads(manifest_bytes)
    config = json.loads((into / "blobs" / "sha256" / manifest["config"]["digest"].removeprefix("sha256:")).read_bytes())
    return Image(entry, into, manifest, config)


@pytest.fixture(scope="session")
def node(built: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Image:
    return _open(built["c2d-node"], tmp_path_factory.mktemp("node-layout"))


@pytest.fixture(scope="session")
def python_runtime(built: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Image:
    return _open(built["c2d-python"], tmp_path_factory.mktemp("python-layout"))


def _unpack(image: Image, into: Path) -> Path:
    """The image's root file system, as a container runtime would see it (umoci, rootless)."""
    bundle = into / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--rootless", "--image", f"{image.layout}:{image.entry['tag']}", str(bundle)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return bundle / "rootfs"


@pytest.fixture(scope="session")
def node_rootfs(node: Image, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _unpack(node, tmp_path_factory.mktemp("node-rootfs"))


@pytest.fixture(scope="session")
def python_rootfs(python_runtime: Image, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _unpack(python_runtime, tmp_path_factory.mktemp("python-rootfs"))


def _run_in(rootfs: Path, image: Image, uid: int, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """argv in the image as a pod would run it: its environment and working folder, a read-only root,
    an empty /tmp, no network, as ``uid``; the command looked up on the image's PATH."""
    config = image.config["config"]
    env = dict(item.split("=", 1) for item in config.get("Env", []))
    command = argv[0]
    if "/" not in command:
        found = [d for d in env["PATH"].split(":") if os.access(rootfs / d.lstrip("/") / command, os.X_OK)]
        assert found, f"{command} is not on the image's PATH {env['PATH']}"
        command = f"{found[0]}/{command}"
    bwrap = ["bwrap", "--ro-bind", str(rootfs), "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    bwrap += ["--unshare-all", "--unshare-user", "--uid", str(uid), "--gid", str(uid), "--die-with-parent"]
    bwrap += ["--clearenv", "--chdir", config.get("WorkingDir") or "/"]
    for name, value in env.items():
        bwrap += ["--setenv", name, value]
    return subprocess.run([*bwrap, command, *argv[1:]], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("name", ["c2d-node", "c2d-python"])
def test_archive_is_an_oci_layout_named_by_its_versioned_reference(
    built: dict[str, dict[str, Any]], name: str, tmp_path: Path
) -> None:
    entry = built[name]
    assert entry["reference"] == f"localhost/{name}:{entry['tag']}" and entry["tag"] != "latest"
    if name == "c2d-node":
        assert entry["reference"] == node_image()
    image = _open(entry, tmp_path)
    assert json.loads((image.layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((image.layout / "index.json").read_text())
    assert index["schemaVersion"] == 2
    descriptor = index["manifests"][0]
    assert descriptor["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    # what `ctr -n k8s.io images import` names the image after
    assert descriptor["annotations"] == {
        "io.containerd.image.name": entry["reference"],
        "org.opencontainers.image.ref.name": entry["tag"],
    }
    assert descriptor["digest"] == entry["digest"]
    # every blob is the content its descriptor says
    descriptors = [descriptor, image.manifest["config"], *image.manifest["layers"]]
    for item in descriptors:
        data = image.blob(item["digest"])
        assert "sha256:" + hashlib.sha256(data).hexdigest() == item["digest"] and len(data) == item["size"]
    assert image.manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    layers = image.manifest["layers"]
    assert [layer["mediaType"] for layer in layers] == ["application/vnd.oci.image.layer.v1.tar+gzip"]
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(image.blob(layers[0]["digest"]))).hexdigest()
    assert image.config["rootfs"] == {"type": "layers", "diff_ids": [diff_id]}
    assert image.config["os"] == "linux" and image.config["architecture"] in ("amd64", "arm64")
    assert (REPO / entry["archive"]).stat().st_size == entry["size_packed"]
    assert entry["size_unpacked"] > entry["size_packed"] > 0 and entry["build_seconds"] >= 0


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_node_image_config_is_the_containerfiles(node: Image) -> None:
    config = node.config["config"]
    user = config["User"]
    assert user == f"{NODE_UID}:{NODE_UID}" and int(user.split(":")[0]) != 0
    assert config["Entrypoint"] == ["c2d"]
    final = _final_stage()
    expected_env: dict[str, str] = {}
    for keyword, rest in final:
        if keyword == "ENV":
            expected_env.update(item.partition("=")[::2] for item in shlex.split(rest))
    single = {keyword: rest for keyword, rest in final if keyword in ("USER", "WORKDIR", "ENTRYPOINT", "CMD", "EXPOSE")}
    assert config["User"] == single["USER"]
    assert config["WorkingDir"] == single["WORKDIR"] == "/var/lib/c2d"
    assert config["Entrypoint"] == json.loads(single["ENTRYPOINT"])
    assert config["Cmd"] == json.loads(single["CMD"])
    assert dict(item.split("=", 1) for item in config["Env"]) == expected_env
    assert config["ExposedPorts"] == {port: {} for port in single["EXPOSE"].split()}  # the provider's API
    labels = {
        item.split("=", 1)[0]: item.split("=", 1)[1]
        for keyword, rest in final
        if keyword == "LABEL"
        for item in rest.split()
    }
    assert labels and labels.items() <= config["Labels"].items()
    assert config["Labels"]["org.opencontainers.image.version"] == project_version()


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_node_image_runs_the_cli_and_the_step_programs(node: Image, node_rootfs: Path) -> None:
    assert (node_rootfs / "etc" / "passwd").read_text().count(f":{NODE_UID}:{NODE_UID}:") == 1
    # the provider/watcher pods: `c2d <command>` as the image's user, read-only root
    cli = _run_in(node_rootfs, node, NODE_UID, ["c2d", "--help"])
    assert cli.returncode == 0, cli.stderr
    assert "provider" in cli.stdout and "engine" in cli.stdout
    code = "import os, steps, provider, workflows, node.cli; print(os.getuid(), os.getcwd())"
    imports = _run_in(node_rootfs, node, NODE_UID, ["python", "-c", code])
    assert imports.returncode == 0, imports.stderr
    assert imports.stdout.split() == [str(NODE_UID), "/var/lib/c2d"]
    # the step pods: `python -m steps.<program>` as nobody (workflows/templates.py)
    for program in ("fetch", "publish", "filter"):
        step = _run_in(node_rootfs, node, NOBODY, ["python", "-m", f"steps.{program}", "--help"])
        assert step.returncode == 0, f"steps.{program}: {step.stderr}"
    # no build tools, no pip, no caches of the build; the node's own programs are precompiled
    site = node_rootfs / "opt" / "c2d" / "lib" / "python3.11" / "site-packages"
    assert not (node_rootfs / "opt" / "c2d" / "bin" / "pip").exists() and not (site / "pip").exists()
    for tool in ("gcc", "cc", "make", "apt-get"):
        assert not (node_rootfs / "usr" / "bin" / tool).exists(), tool
    assert not list((node_rootfs / "usr" / "share" / "man").glob("*"))
    assert not (node_rootfs / "root" / ".cache").exists()
    assert list((site / "steps" / "__pycache__").glob("fetch.cpython-311.pyc"))


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_node_image_holds_the_locked_versions(node_rootfs: Path) -> None:
    site = node_rootfs / "opt" / "c2d" / "lib" / "python3.11" / "site-packages"
    installed: dict[str, str] = {}
    for dist_info in site.glob("*.dist-info"):
        fields = dict(
            line.split(": ", 1) for line in (dist_info / "METADATA").read_text().splitlines()[:5] if ": " in line
        )
        installed[str(canonicalize_name(fields["Name"]))] = fields["Version"]
    assert installed.pop("c2d-node") == project_version()
    assert installed == _pins(), "the image differs from the lock; run tools/images/build.sh lock"


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_python_runtime_runs_algorithms(python_runtime: Image, python_rootfs: Path) -> None:
    assert python_runtime.config["config"]["User"] == f"{NOBODY}:{NOBODY}"
    for interpreter in ("python3", "python"):  # Ocean's entrypoint is `python $ALGO`
        result = _run_in(
            python_rootfs, python_runtime, NOBODY, [interpreter, "-c", "import json, csv, sys; print(sys.version)"]
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("3.11.")


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_second_build_is_cached(built: dict[str, dict[str, Any]]) -> None:
    """Unchanged inputs: no rebuild, the same image. (The runtime image: its inputs are tools/images alone,
    where the node image's also hold the source tree, which may change while a developer runs this.)"""
    started = time.monotonic()
    result = subprocess.run([str(BUILD), "python"], cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
    assert time.monotonic() - started < 30
    assert f"{built['c2d-python']['reference']} up to date" in result.stdout, result.stdout
    again = {entry["name"]: entry for entry in json.loads(IMAGES_JSON.read_text())["images"]}
    assert again["c2d-python"]["digest"] == built["c2d-python"]["digest"]
