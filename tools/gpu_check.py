"""Check on a real NVIDIA machine that the local engine's GPU sandboxes work (docs/gpu.md); not run by tests.

Builds the algorithm sandbox exactly as the engine does (workflows.local.sandbox.bwrap_command with the
engine's seccomp filter and workflows.local.gpu.sandbox_access for the granted device) and runs in it the GPU
probe (:data:`workflows.local.gpu.PROBE`: ``nvidia-smi -L`` and CUDA's device count through libcuda, no CUDA
toolkit needed); then the same probe in a sandbox without GPUs, which must see no device. Prints a PASS or
FAIL line each; exit status 1 when any failed. Usage, from the repository root (as the engine's user, root or not):

    .venv/bin/python tools/gpu_check.py [--device N] [--dev-dir /dev] [--bwrap bwrap]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workflows.exceptions import GpuUnavailableError, SandboxError
from workflows.local import gpu, seccomp
from workflows.local.interpret import Step
from workflows.local.sandbox import Runtime, bwrap_command

HOST = Runtime((), "/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin:/usr/local/nvidia/bin")


def run(bwrap: str, command: list[str], devices: tuple[int, ...], dev_dir: Path) -> tuple[int, str]:
    """``command`` in an algorithm sandbox (no network, the engine's seccomp filter) with ``devices``."""
    step = dataclasses.replace(Step.bare("algorithm", "algorithm", "host", command), gpus=len(devices))
    access = gpu.sandbox_access(dev_dir, devices) if devices else gpu.GpuAccess(())
    fd = seccomp.program_fd(seccomp.program())
    launch = bwrap_command(bwrap, step, HOST, [], seccomp_fd=fd, device_args=access.args)
    try:
        env = {"PATH": HOST.path_env, "HOME": "/tmp", "LANG": "C.UTF-8", **access.env}
        done = subprocess.run(
            launch.argv, env=env, pass_fds=launch.fds, capture_output=True, text=True, timeout=120, check=False
        )
    finally:
        launch.close()
    return done.returncode, (done.stdout + done.stderr).strip()


def probe(bwrap: str, devices: tuple[int, ...], dev_dir: Path) -> tuple[dict[str, object], str]:
    """What a sandbox with ``devices`` sees of the GPUs (:data:`workflows.local.gpu.PROBE`), and its output."""
    code, out = run(bwrap, ["python3", "-c", gpu.PROBE], devices, dev_dir)
    last = out.splitlines()[-1] if out else ""
    try:
        seen = json.loads(last) if code == 0 else {}
    except json.JSONDecodeError:
        seen = {}
    return (seen if isinstance(seen, dict) else {}), out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", type=int, default=0, help="host GPU index to grant (default 0)")
    parser.add_argument("--dev-dir", type=Path, default=Path("/dev"), help="C2D_ENGINE__GPU_DEV_DIR")
    parser.add_argument("--bwrap", default="bwrap")
    args = parser.parse_args()
    failed = 0

    def report(ok: bool, what: str, output: str) -> None:
        nonlocal failed
        failed += not ok
        last = output.splitlines()[-1] if output else "(no output)"
        sys.stdout.write(f"{'PASS' if ok else 'FAIL'} {what}: {last}\n")

    granted = (args.device,)
    try:
        access = gpu.sandbox_access(args.dev_dir, granted)
        shown = [access.args[i] for i in range(2, len(access.args), 3)]  # (flag, source, path) triples
        report(True, "devices and driver files found", f"{len(shown)} binds: {' '.join(shown)}")
    except GpuUnavailableError as exc:
        report(False, "devices and driver files found", str(exc))
        return 1
    try:
        gpu_seen, out = probe(args.bwrap, granted, args.dev_dir)
        smi = gpu_seen.get("smi")
        report(isinstance(smi, list) and len(smi) == 1, "GPU sandbox: nvidia-smi -L lists exactly 1 GPU", out)
        report(gpu_seen.get("cuda") == 1, "GPU sandbox: cuInit, 1 CUDA device", out)
        plain, out = probe(args.bwrap, (), args.dev_dir)
        report(plain.get("nodes") == [], "plain sandbox: no /dev/nvidia*", out)
        listed = plain.get("smi")
        none_listed = not listed or isinstance(listed, str)  # nothing listed, or no nvidia-smi at all
        report(plain.get("cuda") != 1 and none_listed, "plain sandbox: no GPU for nvidia-smi or CUDA", out)
    except (SandboxError, OSError, subprocess.TimeoutExpired) as exc:
        report(False, "sandbox start", str(exc))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
