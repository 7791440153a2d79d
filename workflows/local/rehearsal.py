"""The warm step runner's rehearsal: input-fetch and output-publish run once on a throw-away job before
the runner forks its first child.

The first run of any code writes to memory that stays written: CPython 3.11 specialises a function's
bytecode as it runs it, and logging, the HTTP client, the JSON encoder and the argument parser fill
their caches on first use. In a forked child each such write copies a page of the runner's memory,
and every child used to make them all again (a child took ~950-1,280 page faults, most of them such copies).
Made once here, before the runner freezes its heap and starts forking, they are not made again:
~12% fewer page faults in each input-fetch and output-publish child.

The rehearsal is a whole job in miniature: a one-file dataset served by a one-shot HTTP answer on the
loopback interface, raw algorithm code, a DDO, an output file and a log published into a local
folder. It runs in the runner's own ``/tmp`` (a tmpfs inside its sandbox), with its output sent
nowhere; afterwards the environment is as it was and the programs' loggers have no handlers left.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from steps import fetch, publish
from steps.common import LOGS, OUTPUTS
from steps.contract import FETCH_SPEC_ENV
from workflows.exceptions import RehearsalError

BODY = b"a,b\n1,2\n"
DID = "did:op:" + "0" * 64
LOGGERS = ("c2d.fetch", "c2d.publish")


@contextlib.contextmanager
def _one_shot_http(body: bytes) -> Iterator[str]:
    """Answers one HTTP request on 127.0.0.1 with ``body``; yields the host:port."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(10)

        def answer() -> None:
            with contextlib.suppress(OSError), server.accept()[0] as conn:
                conn.settimeout(10)
                request = b""
                while b"\r\n\r\n" not in request and (chunk := conn.recv(4096)):
                    request += chunk
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                conn.sendall(head.encode() + body)

        thread = threading.Thread(target=answer, name="c2d-rehearsal-http", daemon=True)
        thread.start()
        try:
            yield f"127.0.0.1:{server.getsockname()[1]}"
        finally:
            with contextlib.suppress(OSError):  # wakes an accept() still waiting (no request came)
                server.shutdown(socket.SHUT_RDWR)
            thread.join(10)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _drop_handlers() -> None:
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()


def check_exit(program: str, code: int, output: io.StringIO) -> None:
    """RehearsalError naming ``program`` and its last output line unless it exited 0."""
    if code != 0:
        lines = output.getvalue().strip().splitlines()
        raise RehearsalError(f"{program} exited {code} in the rehearsal: {lines[-1] if lines else 'no output'}")


def rehearse() -> None:
    """Run input-fetch and output-publish once on a throw-away job in a temporary folder; RehearsalError if
    either fails."""
    scratch = Path(tempfile.mkdtemp(prefix="c2d-rehearsal-"))
    output = io.StringIO()
    try:
        data = scratch / "data"
        home = {"TMPDIR": str(scratch), "HOME": str(scratch)}  # the programs' temporary files stay in scratch
        with _one_shot_http(BODY) as host:
            spec = {
                "datasets": [{"did": DID, "files": [{"url": f"http://{host}/data.csv"}], "ddo": {"id": DID}}],
                "algorithm": {"raw_code": "print('rehearsal')"},
                "max_bytes": 1024 * 1024,
                "access": {"allow_hosts": [host]},
            }
            with _environment(home | {FETCH_SPEC_ENV: json.dumps(spec)}), contextlib.redirect_stderr(output):
                check_exit("input-fetch", fetch.main(["--data", str(data)]), output)
        (data / OUTPUTS / "out.txt").write_text("rehearsal\n")
        (data / LOGS / "algorithm.log").write_text("rehearsal\n")
        (scratch / "store").mkdir()
        argv = ["--data", str(data), "--job-id", "rehearsal", "--target", str(scratch / "store")]
        with _environment(home), contextlib.redirect_stderr(output):
            check_exit("output-publish", publish.main(argv), output)
    finally:
        _drop_handlers()
        shutil.rmtree(scratch, ignore_errors=True)
