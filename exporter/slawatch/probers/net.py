"""Name resolution, TLS contexts and certificate facts shared by the probers."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass

from cryptography import x509

from ..config import TLSConfig
from .result import AddressGuard, ProbeLog, ProbeResult

_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}


class ProbeError(Exception):
    """A probe step failed; `reason` is the bounded failure cause."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class Resolved:
    ip: str
    family: int


async def resolve(
    host: str,
    preferred: str,
    fallback: bool,
    result: ProbeResult,
    log: ProbeLog,
    guard: AddressGuard | None,
) -> Resolved:
    """Resolve `host` the way blackbox_exporter does and record the DNS gauges.

    The preferred family ("ip4" or "ip6") wins; the other family is used only
    when `fallback` is true and the preferred one has no address.
    """
    started = time.monotonic()
    literal = _literal_ip(host)
    if literal is not None:
        infos = [(socket.AF_INET6 if literal.version == 6 else socket.AF_INET, str(literal))]
    else:
        loop = asyncio.get_running_loop()
        try:
            raw = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            result.set("probe_dns_lookup_time_seconds", "Returns the time taken for probe dns lookup in seconds",
                       time.monotonic() - started)
            log.error("Resolution with IP protocol failed err=%s", error.strerror)
            raise ProbeError("dns", f"cannot resolve {host}: {error.strerror}") from None
        infos = [(family, sockaddr[0]) for family, _, _, _, sockaddr in raw]

    want = socket.AF_INET6 if preferred == "ip6" else socket.AF_INET
    chosen = next((info for info in infos if info[0] == want), None)
    if chosen is None and fallback:
        chosen = infos[0] if infos else None
    result.set("probe_dns_lookup_time_seconds", "Returns the time taken for probe dns lookup in seconds",
               time.monotonic() - started)
    if chosen is None:
        log.error("Resolution with IP protocol failed protocol=%s", preferred)
        raise ProbeError("dns", f"{host} has no {preferred} address and ip_protocol_fallback is off")

    family, ip = chosen
    result.set("probe_ip_protocol", "Specifies whether probe ip protocol is IP4 or IP6",
               6 if family == socket.AF_INET6 else 4)
    result.set("probe_ip_addr_hash", "Specifies the hash of IP address",
               int.from_bytes(hashlib.sha256(ip.encode()).digest()[:4], "big"))
    log.debug("Resolved target address ip=%s", ip)

    if guard is not None:
        denial = guard(host, ip)
        if denial:
            log.error("Target address denied ip=%s reason=%s", ip, denial)
            raise ProbeError("denied", denial)
    return Resolved(ip, family)


def format_address(ip: str, port: int) -> str:
    """Join an IP and a port, bracketing IPv6 addresses ("[::1]:80")."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _literal_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def build_ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    """Build a client context from blackbox-style tls_config settings."""
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.min_version:
        context.minimum_version = _TLS_VERSIONS[tls.min_version]
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


def record_tls(result: ProbeResult, ssl_object: ssl.SSLObject) -> None:
    """Record certificate expiry and TLS version gauges for an established session."""
    chain = _peer_chain(ssl_object)
    expiries = []
    for der in chain:
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError:
            continue
        expiries.append(certificate.not_valid_after_utc.timestamp())

    if expiries:
        result.cert_expiry = min(expiries)
        result.set("probe_ssl_earliest_cert_expiry", "Returns last SSL chain expiry in unixtime", min(expiries))
        result.set("probe_ssl_last_chain_expiry_timestamp_seconds",
                   "Returns last SSL chain expiry in timestamp", min(expiries))
    # blackbox_exporter uses Go's version names ("TLS 1.3"); Python returns "TLSv1.3".
    version = (ssl_object.version() or "unknown").replace("TLSv", "TLS ")
    result.set("probe_tls_version_info", "Returns the TLS version used or NaN when unknown", 1, version=version)


def _peer_chain(ssl_object: ssl.SSLObject) -> list[bytes]:
    # Python 3.13 adds SSLObject.get_unverified_chain(); 3.11 has the same
    # method only on the private _sslobj. Fall back to the leaf certificate.
    inner = getattr(ssl_object, "_sslobj", None)
    getter = getattr(ssl_object, "get_unverified_chain", None) or getattr(inner, "get_unverified_chain", None)
    if getter is not None:
        try:
            chain = getter() or []
            return [c if isinstance(c, bytes) else c.public_bytes(ssl.Encoding.DER) for c in chain]
        except (ssl.SSLError, ValueError, AttributeError):
            pass
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []
