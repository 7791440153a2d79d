"""How the engine's own folders (the jobs folder, the results store) are laid out on an ext2/3/4 disk.

Every job makes a tree of some 25 files and folders in the jobs folder and removes it when it ends, and
publishes some 8 more into the store. ext4 allocates a new file's inode in its parent folder's block
group, and a subfolder's near its parent's, so by default every job's tree lands in the one block group
of the jobs folder. Without a journal, ext4 does not reuse an inode freed in the last minute (six, while
its inode table block is not yet written back): each allocation steps over every such inode of the
group, one inode table lookup each. Under a steady stream of jobs that group fills with recently freed
inodes and each new file costs a scan of thousands (the kernel's ``find_inode_bit``: 3% of the machine's
CPU in a run at 17 jobs/s, growing through the run). Marked as the top of a directory hierarchy
(``chattr +T``), the folder's subfolders are placed by the Orlov allocator as top-level folders are:
spread over the block groups, so each job's tree has a group with few freed inodes to itself.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

FS_IOC_GETFLAGS = 0x80086601  # _IOR('f', 1, long); the kernel reads and writes an int
FS_IOC_SETFLAGS = 0x40086602  # _IOW('f', 2, long)
FS_TOPDIR_FL = 0x00020000


def _flags(fd: int) -> int:
    buffer = bytearray(4)
    fcntl.ioctl(fd, FS_IOC_GETFLAGS, buffer, True)
    return int.from_bytes(buffer, sys.byteorder)


def is_top_directory(folder: Path) -> bool:
    """Whether ``folder`` carries the top-of-hierarchy flag (False where the file system has no such flag)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return bool(_flags(fd) & FS_TOPDIR_FL)
    except OSError:
        return False
    finally:
        os.close(fd)


def spread_subfolders(folder: Path) -> bool:
    """Mark ``folder`` as the top of a directory hierarchy, so that its subfolders are spread over the
    disk's block groups. False where that is not possible (a file system other than ext2/3/4, or not
    allowed): nothing else changes then."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        flags = _flags(fd)
        if not flags & FS_TOPDIR_FL:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, (flags | FS_TOPDIR_FL).to_bytes(4, sys.byteorder))
    except OSError:
        return False
    finally:
        os.close(fd)
    return True
