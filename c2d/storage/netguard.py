"""SSRF guard: which addresses the node may connect to when it fetches a URL it was given.

Public addresses are allowed; loopback, private, link-local (cloud metadata), shared, reserved and
multicast ones only through an operator allow-list. :mod:`c2d.storage.http` applies it when each
connection opens, on the addresses the host name resolves to, and connects to a vetted address
itself: a redirect or a DNS answer that changes between check and use (rebinding) cannot get around it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from c2d.exceptions import BlockedAddressError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_public(address: IPAddress) -> bool:
    """Globally routable unicast: not loopback, private, link-local (cloud metadata), shared, reserved."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class AllowEntry:
    """One allow-list entry: a network or a host name, optionally limited to one port."""

    network: Network | None
    hostname: str | None
    port: int | None

    @classmethod
    def parse(cls, text: str) -> AllowEntry:
        value = text.strip()
        port: int | None = None
        if value.startswith("["):  # [v6]:port
            host, _, rest = value[1:].partition("]")
            if rest:
                port = _port(rest.removeprefix(":"), text)
        elif value.count(":") == 1:  # host:port or v4:port
            host, _, port_text = value.partition(":")
            port = _port(port_text, text)
        else:
            host = value
        if not host:
            raise ValueError(f"allow-list entry {text!r} names no host")
        try:
            return cls(ipaddress.ip_network(host, strict=False), None, port)
        except ValueError:
            if not all(part.isalnum() or part == "-" for part in host.replace(".", "-").split("-") if part):
                raise ValueError(f"allow-list entry {text!r} is not an address, a network or a host name") from None
            return cls(None, host.lower().rstrip("."), port)

    def allows(self, host: str, port: int, address: IPAddress) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            return address in self.network
        return host.lower().rstrip(".") == self.hostname


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"allow-list entry {entry!r} has an invalid port")
    return int(text)


@dataclass(frozen=True)
class AddressPolicy:
    """Public addresses are allowed; others only through an allow-list entry."""

    allow: tuple[AllowEntry, ...] = ()

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> AddressPolicy:
        return cls(tuple(AllowEntry.parse(entry) for entry in entries))

    def permits(self, host: str, port: int, address: IPAddress) -> bool:
        return is_public(address) or any(entry.allows(host, port, address) for entry in self.allow)

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """The addresses of ``host`` this policy lets us connect to; raises if there are none."""
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        allowed = [address for address in addresses if self.permits(host, port, address)]
        if not allowed:
            # The message names the kind of address, not the URL (dataset URLs are secret).
            raise BlockedAddressError(
                f"refused to connect to a non-public address ({_kind(addresses[0])}); "
                "an operator may allow it with C2D_FETCH__ALLOW_HOSTS"
            )
        return allowed


def _kind(address: IPAddress) -> str:
    for name in ("loopback", "link_local", "private", "multicast", "unspecified", "reserved"):
        if getattr(address, f"is_{name}", False):
            return name.replace("_", "-")
    return "not globally routable"
