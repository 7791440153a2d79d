"""Stream one file from a URL to disk with constant memory, a byte cap and a checksum check.

Messages never contain the URL: dataset URLs are the publisher's secret and logs go to the consumer.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

from steps.exceptions import FetchError, TransientFetchError
from workflows.spec import InputFile

CHUNK = 1024 * 1024
ATTEMPTS = 3
TIMEOUT = (10.0, 60.0)  # connect, read (between bytes)


@dataclass(frozen=True)
class Fetched:
    size: int
    sha256: str


def _attempt(session: requests.Session, file: InputFile, dest: Path, budget: int) -> Fetched:
    scheme = urlsplit(file.url).scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError(f"unsupported URL scheme {scheme!r} (supported: http, https)")
    try:
        response = session.request(
            file.method, file.url, headers=file.headers, stream=True, timeout=TIMEOUT, allow_redirects=True
        )
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise TransientFetchError(f"connection failed ({type(exc).__name__})") from None
    except requests.RequestException as exc:
        raise FetchError(f"request failed ({type(exc).__name__})") from None
    with response:
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientFetchError(f"server answered HTTP {response.status_code}")
        if response.status_code >= 400:
            raise FetchError(f"server answered HTTP {response.status_code}")
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > budget:
            raise FetchError(f"file is {declared} bytes, over the {budget} bytes left for inputs")
        digest = hashlib.sha256()
        size = 0
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            with open(tmp, "wb") as out:
                for chunk in response.iter_content(CHUNK):
                    size += len(chunk)
                    if size > budget:
                        raise FetchError(f"file exceeds the {budget} bytes left for inputs")
                    digest.update(chunk)
                    out.write(chunk)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            tmp.unlink(missing_ok=True)
            raise TransientFetchError(f"transfer interrupted after {size} bytes ({type(exc).__name__})") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    result = Fetched(size, digest.hexdigest())
    try:
        if file.size is not None and file.size != size:
            raise FetchError(f"got {size} bytes, the publisher declared {file.size}")
        if file.checksum is not None and file.checksum != result.sha256:
            raise FetchError(f"sha256 {result.sha256} does not match the declared checksum {file.checksum}")
    except FetchError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dest)
    return result


def fetch_file(session: requests.Session, file: InputFile, dest: Path, budget: int, log: logging.Logger) -> Fetched:
    """Fetch with up to ``ATTEMPTS`` tries on transient errors (1 s, 2 s backoff)."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return _attempt(session, file, dest, budget)
        except TransientFetchError as exc:
            if attempt == ATTEMPTS:
                raise
            log.warning(f"  attempt {attempt} failed: {exc}; retrying")
            time.sleep(2 ** (attempt - 1))
    raise AssertionError("unreachable")
