#!/usr/bin/env python3
"""A throwaway pure cgroup v2 machine for the tests: the distribution's kernel booted in QEMU (software
emulation, no KVM needed) with ``cgroup_no_v1=all``, this host's root file system mounted read-only over 9p
(tmpfs on /tmp, /run, /var/tmp, /dev/shm), and one command run in it as root from this folder.

This host mounts cgroup v1 for memory (a hybrid layout): the v2 limits of the local engine
(workflows/local/cgroup_layout.py) are tested in the machine instead (tests/workflows/test_cgroup_v2_vm.py).

    tools/cgroup2_vm.py setup              # qemu (apt), then kernel + busybox (apt-get download) in .cache
    tools/cgroup2_vm.py check              # can it boot here? (else: why not)
    tools/cgroup2_vm.py run -- CMD [ARG…]  # exit status: CMD's; its output on stdout

``run`` starts the command the way a systemd unit with ``Delegate=yes`` is started: in a group of its own
(``/c2d-node.service``) with the memory, pids and cpu controllers delegated to it.
Stdlib only: it runs before the virtualenv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "cgroup2-vm"
KERNEL = CACHE / "vmlinuz"
INITRD = CACHE / "initrd.gz"
EXIT_MARK = "c2d-vm: exit "
MODULES = ("virtio_pci", "9pnet_virtio", "9p")  # with what they depend on (modules.dep): the host folder over virtio 9p

START_MARK = "c2d-vm: start"
INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
echo "c2d-vm: start"
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
ip link set lo up
for module in $(cat /modules.order); do insmod "/modules/$module" || echo "c2d-vm: insmod $module failed"; done
mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host || poweroff -f
keep="$(sed -n 's/.*c2d\.keep=\([^ ]*\).*/\1/p' /proc/cmdline)"  # a checkout under /tmp stays visible
[ -n "$keep" ] && mkdir -p /kept && mount --bind "/host$keep" /kept
for folder in tmp run var/tmp; do mount -t tmpfs -o mode=1777 tmpfs "/host/$folder"; done
[ -n "$keep" ] && mkdir -p "/host$keep" && mount --move /kept "/host$keep"
mount --move /dev /host/dev
mount --move /sys /host/sys
mount --move /proc /host/proc
mkdir -p /host/dev/shm /host/dev/pts
mount -t tmpfs -o mode=1777 shm /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup
script="$(sed -n 's/.*c2d\.run=\([^ ]*\).*/\1/p' /host/proc/cmdline)"
exec switch_root /host /bin/sh "$script"
"""

# what runs in the machine as its init (the host's root is the machine's: no chroot, where the kernel refuses
# new user namespaces): the command in a delegated group, its exit status, power off
RUN = """cd {cwd}
export HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PY_COLORS=0 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin {env}
echo "+memory +pids +cpu" > /sys/fs/cgroup/cgroup.subtree_control && mkdir /sys/fs/cgroup/c2d-node.service &&
    /bin/sh -c 'echo $$ > /sys/fs/cgroup/c2d-node.service/cgroup.procs && exec "$@"' c2d-node {command} </dev/null 2>&1
echo "c2d-vm: exit $?"
echo 1 > /proc/sys/kernel/sysrq && echo o > /proc/sysrq-trigger
while :; do :; done  # until the power is off (a command here could fail to load: init must not exit)
"""


def _log(message: str) -> None:
    print(f"[cgroup2-vm] {message}", file=sys.stderr, flush=True)


def ready() -> str | None:
    """None when the machine can boot here, else why not (for a test's skip reason)."""
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 is not installed (tools/cgroup2_vm.py setup installs it)"
    if not (KERNEL.is_file() and INITRD.is_file()):
        return "no kernel and initramfs in .cache/cgroup2-vm (tools/cgroup2_vm.py setup fetches them)"
    return None


APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def _refresh_lists() -> None:
    """``apt-get update``: package lists missing (a fresh machine, or cleaned) or stale."""
    subprocess.run(["apt-get", "update"], env=APT_ENV, capture_output=True, check=False)


def _apt(*args: str, cwd: Path | None = None) -> None:
    """apt-get ARGS (in ``cwd``), once more after refreshing the package lists when it fails."""
    if subprocess.run(["apt-get", *args], env=APT_ENV, cwd=cwd, capture_output=True).returncode == 0:
        return
    _refresh_lists()
    done = subprocess.run(["apt-get", *args], env=APT_ENV, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: apt-get {' '.join(args)} failed:\n{done.stderr.strip()}")


def _kernel_package() -> str:
    """The kernel image package the distribution's ``linux-image-amd64`` points at now."""
    for attempt in range(2):
        if attempt:
            _refresh_lists()
        shown = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True).stdout
        if found := re.search(r"Depends: (linux-image-\d\S*)", shown):
            return found.group(1)
    raise SystemExit("error: apt-cache knows no linux-image-amd64 (is this Debian amd64?)")


def _module_files(tree: Path, names: tuple[str, ...]) -> list[Path]:
    """The module files for ``names`` and what they need, in load order (each module's ``depends=`` entry: the
    package ships no modules.dep, depmod makes it at install, and this host may have no kmod)."""
    by_name = {ko.name.split(".ko")[0].replace("-", "_"): ko for ko in (tree / "lib" / "modules").rglob("*.ko*")}
    order: list[Path] = []

    def add(name: str) -> None:
        module = by_name[name]
        found = re.search(rb"\0depends=([^\0]*)\0", module.read_bytes())  # in its .modinfo section
        for need in filter(None, (found.group(1).decode() if found else "").split(",")):
            add(need.replace("-", "_"))
        if module not in order:
            order.append(module)

    for name in names:
        add(name)
    return order


def setup() -> None:
    """Install qemu when missing; fetch the kernel and busybox and make the initramfs, once."""
    if shutil.which("qemu-system-x86_64") is None:
        _log("installing qemu-system-x86 (apt)")
        _apt("install", "-y", "--no-install-recommends", "qemu-system-x86")
    package = _kernel_package()
    stamp, made = CACHE / "made-from", f"{package} {hashlib.sha256(INIT.encode()).hexdigest()[:16]}"
    if ready() is None and stamp.is_file() and stamp.read_text() == made:
        return
    _log(f"fetching {package} and busybox-static (apt-get download) into .cache/cgroup2-vm")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as work:
        folder = Path(work)
        os.chmod(folder, 0o755)  # apt's download user (_apt) writes here
        for name in (package, "busybox-static"):
            _apt("download", name, cwd=folder)
        tree = folder / "tree"
        for deb in folder.glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
        initramfs = folder / "initramfs"
        (initramfs / "bin").mkdir(parents=True)
        (initramfs / "modules").mkdir()
        shutil.copy2(tree / "bin" / "busybox", initramfs / "bin" / "busybox")
        order = []
        for module in _module_files(tree, MODULES):
            if module.suffix != ".ko":
                raise SystemExit(f"error: {module.name}: compressed kernel modules are not supported")
            shutil.copy2(module, initramfs / "modules" / module.name)
            order.append(module.name)
        (initramfs / "modules.order").write_text("\n".join(order) + "\n")
        (initramfs / "init").write_text(INIT)
        (initramfs / "init").chmod(0o755)
        for name in ("proc", "sys", "dev"):
            (initramfs / name).mkdir()
        files = sorted(str(p.relative_to(initramfs)) for p in initramfs.rglob("*"))
        cpio = subprocess.run(
            [str(initramfs / "bin" / "busybox"), "cpio", "-o", "-H", "newc"],
            cwd=initramfs,
            input="\n".join([".", *files]).encode(),
            capture_output=True,
            check=True,
        ).stdout
        gzip = subprocess.run(["gzip", "-9"], input=cpio, capture_output=True, check=True).stdout
        INITRD.write_bytes(gzip)
        (kernel,) = (tree / "boot").glob("vmlinuz-*")
        shutil.copy2(kernel, KERNEL)
        stamp.write_text(made)
    _log(f"ready: {package}")


def run(command: list[str], env: dict[str, str], memory_mib: int, cpus: int, timeout: float) -> int:
    """Boot the machine, run ``command`` from the current folder; its exit status (124: timed out)."""
    if reason := ready():
        raise SystemExit(f"error: {reason}")
    scripts = CACHE / "run"
    scripts.mkdir(parents=True, exist_ok=True)
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    with tempfile.NamedTemporaryFile("w", dir=scripts, suffix=".sh", delete=False) as script:
        script.write(RUN.format(cwd=shlex.quote(os.getcwd()), env=exports, command=shlex.join(command)))
    hidden = [Path(folder) for folder in ("/tmp", "/run", "/var/tmp")]  # tmpfs in the machine
    keep = f" c2d.keep={REPO}" if any(REPO.is_relative_to(folder) for folder in hidden) else ""
    qemu = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",  # KVM in this project's VMs (nested) hangs; emulation boots in seconds
        "-m",
        str(memory_mib),
        "-smp",
        str(cpus),
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",
        "-kernel",
        str(KERNEL),
        "-initrd",
        str(INITRD),
        "-append",
        f"console=ttyS0 loglevel=2 panic=-1 cgroup_no_v1=all c2d.run={script.name}{keep}",
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
    ]
    try:
        proc = subprocess.Popen(qemu, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        code, started, firmware = 125, False, []
        expired = threading.Event()

        def expire() -> None:  # the machine runs on, printing or not: power it off
            expired.set()
            proc.kill()

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            for raw in proc.stdout:
                line = raw.decode(errors="replace").replace("\r", "")
                if not started:  # the firmware's screen, shown only when the machine does not start
                    started = START_MARK in line  # after the firmware's terminal codes
                    firmware.append(line)
                elif "sysrq: Power Off" in line or "reboot: Power down" in line:  # the kernel's, at the end
                    continue
                elif found := re.search(EXIT_MARK + r"(\d+)$", line.rstrip()):
                    code = int(found.group(1))
                else:
                    sys.stdout.write(line)
                    sys.stdout.flush()
            proc.wait()
        finally:
            timer.cancel()
        if expired.is_set():
            return 124
        if not started:
            sys.stdout.write("".join(firmware))
        return code
    finally:
        Path(script.name).unlink(missing_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="what", required=True)
    commands.add_parser("setup", help="install qemu, fetch the kernel and busybox (cached)")
    commands.add_parser("check", help="exit status 0 when the machine can boot here, else say why not")
    runner = commands.add_parser("run", help="run a command in the machine")
    runner.add_argument("--memory", type=int, default=2048, help="MiB of memory (default 2048)")
    runner.add_argument("--cpus", type=int, default=2)
    runner.add_argument("--timeout", type=float, default=900.0, help="seconds, then exit status 124")
    runner.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="set in the machine")
    runner.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.what == "setup":
        setup()
        return 0
    if args.what == "check":
        if reason := ready():
            print(reason)
            return 1
        return 0
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("run: no command")
    env = dict(item.split("=", 1) for item in args.env)
    return run(command, env, args.memory, args.cpus, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
