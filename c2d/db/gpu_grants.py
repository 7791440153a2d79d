"""Which host GPU each running job of the local engine holds (``gpu_grants``, one row per device).

A device is the host's ``/dev/nvidia<N>``, named by N: it is held by at most one job at a time, whatever
environment declares it (two environments that list device 0 never both hand it out). The engine grants a
job its devices before its steps run (:func:`grant`), gives them back at every end of the job
(:func:`release`), and, when it starts, drops the grants of every job it does not resume
(:func:`release_all_but`). Every function takes an autocommit connection and runs one transaction; grants are
serialised by a transaction-level advisory lock, so concurrent grants (threads, processes) never hand out a
device twice (the primary key would refuse it anyway).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import psycopg

from c2d.exceptions import GpuBusyError

GRANT_LOCK = 0x6332_6770  # "c2gp": pg_advisory_xact_lock of every grant


def grant(conn: psycopg.Connection[Any], job_id: str, candidates: Sequence[int], count: int) -> list[int]:
    """Give ``job_id`` ``count`` devices among ``candidates`` (the environment's, in its order of preference),
    and return them sorted. Idempotent: the devices the job already holds among the candidates are kept (a job
    resumed after an engine restart gets the same ones back); held devices that are no longer candidates, or
    beyond ``count``, are given back. ``count`` 0: the job holds none afterwards. Raises
    :class:`GpuBusyError` (nothing changed) when not enough candidates are free, ValueError when ``count`` is
    above the number of candidates."""
    wanted = list(dict.fromkeys(candidates))
    if count < 0 or count > len(wanted):
        raise ValueError(f"cannot grant {count} of {len(wanted)} GPUs")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (GRANT_LOCK,))
        rows = conn.execute("SELECT device, job_id FROM gpu_grants WHERE device = ANY(%s)", (wanted,)).fetchall()
        holders = {int(device): str(holder) for device, holder in rows}
        mine = [device for device in wanted if holders.get(device) == job_id][:count]
        free = [device for device in wanted if device not in holders]
        need = count - len(mine)
        if need > len(free):
            raise GpuBusyError(
                f"{count} GPU(s) needed, {len(mine) + len(free)} of the environment's {len(wanted)} free now"
            )
        conn.execute("DELETE FROM gpu_grants WHERE job_id = %s AND device <> ALL(%s)", (job_id, mine))
        taken = free[:need]
        if taken:
            conn.execute("INSERT INTO gpu_grants (device, job_id) SELECT unnest(%s::integer[]), %s", (taken, job_id))
    return sorted(mine + taken)


def release(conn: psycopg.Connection[Any], job_id: str) -> list[int]:
    """Give back every device ``job_id`` holds; returns them (sorted; empty when it held none)."""
    rows = conn.execute("DELETE FROM gpu_grants WHERE job_id = %s RETURNING device", (job_id,)).fetchall()
    return sorted(int(row[0]) for row in rows)


def release_all_but(conn: psycopg.Connection[Any], keep: Collection[str]) -> dict[int, str]:
    """Give back the devices of every job not in ``keep`` (an engine's start: the jobs it resumes keep theirs);
    returns what was dropped, device -> job id."""
    rows = conn.execute(
        "DELETE FROM gpu_grants WHERE job_id <> ALL(%s) RETURNING device, job_id", (list(keep),)
    ).fetchall()
    return {int(device): str(job_id) for device, job_id in rows}


def holders(conn: psycopg.Connection[Any]) -> dict[int, str]:
    """Every granted device -> the job that holds it."""
    rows = conn.execute("SELECT device, job_id FROM gpu_grants ORDER BY device").fetchall()
    return {int(device): str(job_id) for device, job_id in rows}
