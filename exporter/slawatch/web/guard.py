"""The allowlist that decides which addresses `/probe` may reach."""

from __future__ import annotations

import functools
import ipaddress
from urllib.parse import urlsplit

from ..config import Config, split_host_port
from ..probers.net import ADDRESS_CACHE_SIZE

# Link-local ranges hold cloud metadata services (169.254.169.254, fe80::/10).
LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
# Linux connects to the local host when the destination is 0.0.0.0 or ::.
UNSPECIFIED = (ipaddress.ip_network("0.0.0.0/8"), ipaddress.ip_network("::/128"))


class Denial(str):
    """Why an address is denied: the message as the string value, plus a bounded `reason`."""

    reason: str

    def __new__(cls, reason: str, message: str) -> "Denial":
        denial = super().__new__(cls, message)
        denial.reason = reason
        return denial


@functools.lru_cache(maxsize=ADDRESS_CACHE_SIZE)
def normalise_ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Parse an IP address, mapping IPv4-mapped IPv6 (::ffff:a.b.c.d) to IPv4."""
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def target_host(target: str) -> str:
    """Return the host part of an http URL or a host:port target, lower-cased."""
    if "://" in target:
        return (urlsplit(target).hostname or "").lower()
    host, _ = split_host_port(target)
    return host.strip("[]").lower()


class ProbeGuard:
    """Checks each resolved address of a `/probe` request against `probe.allow`.

    An address is allowed when its host name is listed (or is a configured
    target's host while `allow_configured_targets` is on) or when the address
    lies in a listed CIDR range. Link-local addresses are denied unless a
    listed CIDR range contains them, even for an allowed host name.
    """

    def __init__(self, config: Config):
        self.networks = []
        self.hosts = set()
        for entry in config.probe.allow:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.add(entry.lower())
        if config.probe.allow_configured_targets:
            self.hosts.update(target_host(t.url) for t in config.targets)

    def __call__(self, host: str, ip: str) -> str | None:
        try:
            address = normalise_ip(ip)
        except ValueError:
            return Denial("invalid_address", f"address {ip!r} is not a valid IP address")

        in_network = any(address.version == net.version and address in net for net in self.networks)
        if any(address in net for net in LINK_LOCAL if net.version == address.version) and not in_network:
            return Denial("link_local",
                          f"link-local address {address} is denied unless probe.allow lists a range that contains it")
        if any(address in net for net in UNSPECIFIED if net.version == address.version) and not in_network:
            return Denial("unspecified",
                          f"unspecified address {address} reaches the local host: list a range that contains it to allow it")
        if in_network or host.strip("[]").lower() in self.hosts:
            return None
        shown = str(address) if host.strip("[]") == str(address) else f"{host} ({address})"
        return Denial("not_allowed",
                      f"{shown} is not in probe.allow: add the host name or a CIDR range that contains it")
