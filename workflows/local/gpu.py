"""What a GPU step's sandbox gets of the host's NVIDIA GPUs (docs/gpu.md).

The engine grants a job whole devices (:mod:`c2d.db.gpu_grants`); the step that asked for them (the algorithm)
gets, on top of bubblewrap's minimal ``/dev``:

* ``/dev/nvidia<N>`` of each granted N and nothing of the other GPUs, plus the driver's control nodes
  ``nvidiactl`` (required), ``nvidia-uvm`` and ``nvidia-uvm-tools`` (those the host has), bound from the
  engine's device folder (``C2D_ENGINE__GPU_DEV_DIR``) at the same names under ``/dev``;
* the host's driver libraries, read-only at their own paths, found the way NVIDIA's container toolkit finds
  them: the entries of the dynamic linker's cache (``ldconfig -p``) named after its compute and utility
  libraries (:data:`DRIVER_LIBRARIES`), and the ``nvidia-smi`` binary. Those under a system folder the
  sandbox already shows (``/usr``, ``/lib``...) need no bind; the host's ``/etc/ld.so.cache`` is in every
  sandbox, so the others are found at their paths;
* ``NVIDIA_VISIBLE_DEVICES`` = the granted host indexes (what the toolkit sets). ``CUDA_VISIBLE_DEVICES`` is
  left unset, as the toolkit leaves it: CUDA numbers the devices it can open from 0, so inside the sandbox the
  granted GPUs are CUDA devices 0..n-1; setting it to the host indexes would hide them.

No other step gets any of this: bubblewrap's ``--dev /dev`` has no NVIDIA node.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from workflows.exceptions import GpuUnavailableError
from workflows.local.sandbox import SYSTEM_DIRS

CONTROL = "nvidiactl"
CONTROL_NODES = (CONTROL, "nvidia-uvm", "nvidia-uvm-tools")
# libnvidia-container's utility and compute libraries (NVIDIA/libnvidia-container src/nvc_info.c): what CUDA
# and NVML programs load. Graphics, video and display libraries are left out (a job computes).
DRIVER_LIBRARIES = (
    "libnvidia-ml.so",
    "libnvidia-cfg.so",
    "libnvidia-nscq.so",
    "libcuda.so",
    "libcudadebugger.so",
    "libnvidia-opencl.so",
    "libnvidia-gpucomp.so",
    "libnvidia-ptxjitcompiler.so",
    "libnvidia-fatbinaryloader.so",
    "libnvidia-allocator.so",
    "libnvidia-compiler.so",
    "libnvidia-pkcs11.so",
    "libnvidia-pkcs11-openssl3.so",
    "libnvidia-nvvm.so",
    "libnvidia-tileiras.so",
)
DRIVER_BINARIES = ("nvidia-smi",)
LDCONFIG = "/sbin/ldconfig"
BINARY_PATH = "/usr/bin:/usr/sbin:/bin:/sbin:/usr/local/bin:/usr/local/nvidia/bin"
_CACHE_ENTRY = re.compile(r"^\s*(\S+)\s+\(([^)]*)\)\s+=>\s+(/\S+)\s*$")
# A Python program that prints what its sandbox sees of the GPUs as one JSON line (its dict ``seen``):
# ``nodes`` the /dev/nvidia* names, ``smi`` the GPUs ``nvidia-smi -L`` lists (or why it could not run),
# ``cuda`` libcuda's device count after cuInit (or the error). Needs python3 and the host driver only (no CUDA
# toolkit); tools/gpu_check.py and tests/workflows/test_real_gpu.py run it.
PROBE = """\
import ctypes, json, os, subprocess
seen = {'nodes': sorted(n for n in os.listdir('/dev') if n.startswith('nvidia'))}
try:
    smi = subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True)
    seen['smi'] = [line for line in smi.stdout.splitlines() if line.startswith('GPU ')]
except OSError as exc:
    seen['smi'] = str(exc)
try:
    cuda = ctypes.CDLL('libcuda.so.1')
    count = ctypes.c_int(-1)
    code = cuda.cuInit(0) or cuda.cuDeviceGetCount(ctypes.byref(count))
    seen['cuda'] = count.value if code == 0 else f'error {code}'
except OSError as exc:
    seen['cuda'] = f'no libcuda: {exc}'
print(json.dumps(seen), flush=True)
"""


@dataclass(frozen=True)
class GpuAccess:
    """The bubblewrap arguments and the environment that give a sandbox its granted GPUs."""

    devices: tuple[int, ...]
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def check_devices(dev_dir: Path, devices: Sequence[int]) -> None:
    """Raise :class:`GpuUnavailableError` when the driver's control node is missing (no NVIDIA driver) or a
    granted device is not a character device of ``dev_dir``. The message names the GPU index, not the path."""
    if not _is_device(dev_dir / CONTROL):
        raise GpuUnavailableError("the NVIDIA driver is not present on this machine (no nvidiactl device)")
    missing = [index for index in devices if not _is_device(dev_dir / f"nvidia{index}")]
    if missing:
        names = ", ".join(str(index) for index in missing)
        raise GpuUnavailableError(f"GPU {names} of this environment is not available on this machine")


def sandbox_access(dev_dir: Path, devices: Sequence[int], ldconfig: str = LDCONFIG) -> GpuAccess:
    """What a sandbox needs to use ``devices`` (host indexes): see the module's contract. Raises
    :class:`GpuUnavailableError` (:func:`check_devices`) rather than give a sandbox fewer GPUs than granted."""
    check_devices(dev_dir, devices)
    args: list[str] = []
    nodes = [f"nvidia{index}" for index in devices]
    nodes += [name for name in CONTROL_NODES if _is_device(dev_dir / name)]
    for name in nodes:
        args += ["--dev-bind", str(dev_dir / name), f"/dev/{name}"]
    args += file_args(driver_files(ldconfig))
    visible = ",".join(str(index) for index in devices)
    return GpuAccess(tuple(devices), args, {"NVIDIA_VISIBLE_DEVICES": visible})


def driver_files(ldconfig: str = LDCONFIG) -> list[Path]:
    """The host's NVIDIA driver libraries (every cache entry of :data:`DRIVER_LIBRARIES`, each ABI the cache
    lists) and binaries, as the host names them (symlinks included). Empty when the cache cannot be read."""
    try:
        listing = subprocess.run(
            [ldconfig, "-p"], capture_output=True, text=True, timeout=10, check=False, env={"LC_ALL": "C"}
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        listing = ""
    found: dict[Path, None] = {}
    for line in listing.splitlines():
        match = _CACHE_ENTRY.match(line)
        if match and any(match[1].startswith(name) for name in DRIVER_LIBRARIES):
            found[Path(match[3])] = None
    for name in DRIVER_BINARIES:
        binary = shutil.which(name, path=BINARY_PATH)
        if binary is not None:
            found[Path(binary)] = None
    return list(found)


def file_args(paths: Sequence[Path]) -> list[str]:
    """bubblewrap arguments showing each host file at its own path, read-only: a symlink as the same symlink
    plus its target; nothing for a file a system folder of the sandbox shows already."""
    args: list[str] = []
    done: set[Path] = set()
    for path in paths:
        if path in done or _shown(path):
            continue
        done.add(path)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
            target = path.resolve()
            if target.is_file() and target not in done and not _shown(target):
                done.add(target)
                args += ["--ro-bind", str(target), str(target)]
        elif path.is_file():
            args += ["--ro-bind", str(path), str(path)]
    return args


def _shown(path: Path) -> bool:
    """Whether every sandbox shows ``path`` already: its folder is inside a system folder it binds whole."""
    folder = path.parent.resolve()
    return any(folder.is_relative_to(Path(system).resolve()) for system in SYSTEM_DIRS if Path(system).exists())


def _is_device(path: Path) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False
