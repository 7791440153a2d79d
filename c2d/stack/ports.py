"""Is a TCP port free, and if not, who holds it (read from /proc, no external tools)."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from c2d.exceptions import PortInUseError

_LISTEN = "0A"


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state == _LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def port_holder(port: int) -> str | None:
    """``"<command> (pid N)"`` of a process listening on ``port``, when visible to us."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in targets:
                    cmd = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
                    return f"{Path(cmd).name or '?'} (pid {proc.name})"
        except OSError:
            continue
    return "another process"


def ensure_port_free(host: str, port: int, what: str, setting: str) -> None:
    """Raise a one-line PortInUseError naming the holder and the setting to change."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise PortInUseError(f"cannot bind {host}:{port} for {what}: {exc.strerror}") from exc
            holder = port_holder(port) or "another process"
            raise PortInUseError(
                f"port {port} needed by {what} is already in use by {holder}; "
                f"stop it or choose another port with {setting}=<port>"
            ) from exc


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
