"""Streaming HTTP(S) GET/POST on ``http.client``, through the SSRF guard, with redirects re-checked.

Used for every URL the node fetches for a job (input-fetch, ``fileinfo``, ``filesChecksum``). Built on
the standard library rather than ``requests`` so that a step starts in milliseconds (importing requests
and urllib3 costs a step ~0.15 s), and so that the guard sits exactly where the socket is opened: the
host name is resolved once, every address is vetted (:class:`AddressPolicy`), and the connection goes
to a vetted address (TLS still verifies the certificate for the host name). No proxies, no cookies, no
credentials from the environment.
"""

from __future__ import annotations

import http.client
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from c2d.exceptions import StorageError, TransientStorageError
from c2d.storage.netguard import AddressPolicy

CHUNK = 1024 * 1024
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class _GuardedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int | None, timeout: float, policy: AddressPolicy) -> None:
        super().__init__(host, port, timeout=timeout)
        self.policy = policy

    def connect(self) -> None:
        self.sock = _connect(self.policy, self.host, self.port, self.timeout)


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int | None, timeout: float, policy: AddressPolicy) -> None:
        import ssl  # only jobs that fetch over HTTPS pay for it

        self.tls = ssl.create_default_context()  # certificate and host name verified
        super().__init__(host, port, timeout=timeout, context=self.tls)
        self.policy = policy

    def connect(self) -> None:
        sock = _connect(self.policy, self.host, self.port, self.timeout)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)


def _connect(policy: AddressPolicy, host: str, port: int, timeout: float | None) -> socket.socket:
    addresses = policy.resolve(host, port)  # raises BlockedAddressError when none may be used
    last: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((str(address), port), timeout=timeout)
        except OSError as exc:
            last = exc
    raise last or OSError("no address to connect to")


def _certificate_error(exc: BaseException) -> bool:
    ssl = sys.modules.get("ssl")  # imported by the HTTPS connection, if there was one
    return ssl is not None and isinstance(exc, ssl.SSLCertVerificationError)


@dataclass
class HttpResponse:
    status: int
    length: int | None
    content_type: str
    _response: http.client.HTTPResponse = field(repr=False)
    _connection: http.client.HTTPConnection = field(repr=False)

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        try:
            while chunk := self._response.read(size):
                yield chunk
        except (OSError, http.client.HTTPException) as exc:
            raise TransientStorageError(f"transfer interrupted ({type(exc).__name__})") from None

    def close(self) -> None:
        self._connection.close()


@dataclass(frozen=True)
class HttpClient:
    policy: AddressPolicy
    timeout: float = 60.0  # connect, and each read

    def open(self, url: str, method: str = "GET", headers: dict[str, str] | None = None) -> HttpResponse:
        """The final response after at most MAX_REDIRECTS redirects (each destination vetted again).
        The caller closes it. Connection failures raise TransientStorageError; a refused destination
        BlockedAddressError; a malformed URL StorageError. Messages never contain the URL."""
        for _ in range(MAX_REDIRECTS + 1):
            response = self._request(url, method, headers or {})
            if response.status not in REDIRECTS:
                return response
            location = response._response.getheader("Location")
            response.close()
            if not location:
                raise StorageError(f"HTTP {response.status} redirect without a Location")
            url = urljoin(url, location)
            if response.status == 303:
                method = "GET"
        raise StorageError("too many redirects")

    def _request(self, url: str, method: str, headers: dict[str, str]) -> HttpResponse:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StorageError(f"unsupported URL (scheme {parts.scheme!r})")
        if parts.username or parts.password:
            raise StorageError("credentials in URLs are not supported (use headers)")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise StorageError("invalid port in URL") from None
        kind = _GuardedHTTPSConnection if parts.scheme == "https" else _GuardedHTTPConnection
        connection = kind(parts.hostname, port, self.timeout, self.policy)  # explicit port: no host parsing
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request(method, path, headers={"User-Agent": "c2d-node", **headers})
            raw = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            if _certificate_error(exc):
                raise StorageError("the server's TLS certificate was rejected") from None
            raise TransientStorageError(f"connection failed ({type(exc).__name__})") from None
        except ValueError as exc:  # a header or path http.client refuses (UnicodeError included)
            connection.close()
            raise StorageError(f"invalid request ({type(exc).__name__})") from None
        declared = raw.getheader("Content-Length")
        return HttpResponse(
            raw.status,
            int(declared) if declared and declared.isdigit() else None,
            raw.getheader("Content-Type") or "application/octet-stream",
            raw,
            connection,
        )
