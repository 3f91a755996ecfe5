"""Name resolution, TLS contexts and certificate facts shared by the probers."""

from __future__ import annotations

import _ssl
import asyncio
import functools
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

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


async def run_steps(steps: Coroutine[Any, Any, None], timeout: float, result: ProbeResult, log: ProbeLog) -> bool:
    """Await a prober's steps within `timeout`; return True if they finished, else record why they failed.

    A timeout, a ProbeError and an OSError become a failed result with a
    bounded reason. Any other exception is a bug and propagates; the scheduler
    logs it and counts the probe as failed with reason "internal".
    """
    try:
        async with asyncio.timeout(timeout):
            await steps
        return True
    except TimeoutError:
        log.error("Probe timed out timeout_seconds=%.3f", timeout)
        result.fail("timeout")
    except ProbeError as error:
        log.error("Probe failed reason=%s err=%s", error.reason, error)
        result.fail(error.reason)
        result.error = str(error)
    except OSError as error:
        # A socket error outside the steps that name their own reason.
        log.error("Probe failed reason=connect err=%s", error)
        result.fail("connect")
        result.error = str(error)
    return False


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
    literal = literal_ip(host)
    if literal is not None:
        literal_text = str(literal)
        infos = [(socket.AF_INET6 if literal.version == 6 else socket.AF_INET, literal_text)]
        if isinstance(literal, ipaddress.IPv4Address) and literal_text != host:
            log.debug("Normalised numeric host host=%s ip=%s", host, literal_text)
    else:
        loop = asyncio.get_running_loop()
        try:
            raw = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            result.set("probe_dns_lookup_time_seconds", "Returns the time taken for probe dns lookup in seconds",
                       time.monotonic() - started)
            log.error("Resolution with IP protocol failed err=%s", error.strerror)
            raise ProbeError("dns", f"cannot resolve {host}: {error.strerror}") from None
        except ValueError as error:
            # The IDNA codec getaddrinfo() applies rejects the name (UnicodeError), or it contains a NUL.
            result.set("probe_dns_lookup_time_seconds", "Returns the time taken for probe dns lookup in seconds",
                       time.monotonic() - started)
            log.error("Invalid host name host=%r err=%s", host, error)
            raise ProbeError("invalid_target", f"host {host!r} is not a valid DNS name: {error}") from None
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
    result.set("probe_ip_addr_hash", "Specifies the hash of IP address", ip_hash(ip))
    log.debug("Resolved target address ip=%s", ip)

    if guard is not None:
        denial = guard(host, ip)
        if denial:
            log.error("Target address denied ip=%s reason=%s", ip, denial)
            result.denied_reason = getattr(denial, "reason", "not_allowed")
            raise ProbeError("denied", str(denial))
    return Resolved(ip, family)


def format_address(ip: str, port: int) -> str:
    """Join an IP and a port, bracketing IPv6 addresses ("[::1]:80")."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


# inet_aton(3) accepts one to four dot-separated parts in decimal, octal
# (leading 0) or hex (0x): "2130706434", "0x7f000002", "127.1", "0177.0.0.2".
# getaddrinfo() takes the same forms without asking DNS.
_INET_ATON_PART = r"(?:0[xX][0-9a-fA-F]*|[0-9]+)"
_INET_ATON = re.compile(rf"^{_INET_ATON_PART}(?:\.{_INET_ATON_PART}){{0,3}}$")


# Parsing an address with ipaddress takes a few microseconds, and most
# probes repeat the hosts and addresses of earlier ones. The caches are
# bounded so /probe requests for arbitrary hosts cannot grow them.
ADDRESS_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=ADDRESS_CACHE_SIZE)
def ip_hash(ip: str) -> int:
    """Return 32-bit FNV-1a of the packed address, the value blackbox_exporter 0.23 exports."""
    value = 0x811C9DC5
    for byte in ipaddress.ip_address(ip.split("%", 1)[0]).packed:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


@functools.lru_cache(maxsize=ADDRESS_CACHE_SIZE)
def literal_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Return the address that `host` denotes without DNS, in every numeric form the C library accepts."""
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare.split("%", 1)[0] if ":" in bare else bare)
    except ValueError:
        pass
    if _INET_ATON.match(bare):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(bare))
        except OSError:
            return None
    return None


def build_ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    """Build a client context from blackbox-style tls_config settings."""
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.min_version:
        context.minimum_version = _TLS_VERSIONS[tls.min_version]
    if tls.max_version:
        context.maximum_version = _TLS_VERSIONS[tls.max_version]
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


# OpenSSL X509_V_ERR_* codes (include/openssl/x509_vfy.h) mapped to bounded reasons.
_VERIFY_REASONS = {
    9: "cert_not_yet_valid",
    10: "cert_expired",
    2: "cert_untrusted",
    18: "cert_untrusted",
    19: "cert_untrusted",
    20: "cert_untrusted",
    21: "cert_untrusted",
    62: "cert_hostname",
}

Reconnect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def tls_handshake(writer: asyncio.StreamWriter, tls: TLSConfig, server_name: str, result: ProbeResult,
                        log: ProbeLog, reconnect: Reconnect) -> None:
    """Run the TLS handshake on `writer`, adding its time to the tls phase and recording the certificates.

    When verification fails, a second, unverified handshake over a fresh
    connection from `reconnect` records the presented chain, so an expired or
    untrusted certificate still gets its expiry gauges. Raises ProbeError.
    """
    context = build_ssl_context(tls)
    mark = time.monotonic()
    try:
        await writer.start_tls(context, server_hostname=server_name)
    except ssl.SSLCertVerificationError as error:
        _add_phase(result, "tls", mark)
        reason = _VERIFY_REASONS.get(error.verify_code, "tls")
        log.error("TLS certificate verification failed reason=%s err=%s", reason, error.verify_message)
        await _record_unverified(reconnect, tls, server_name, result, log)
        raise ProbeError(reason, f"TLS certificate of {server_name} failed verification: {error.verify_message}") \
            from None
    except (ssl.SSLError, ConnectionError) as error:
        _add_phase(result, "tls", mark)
        raise ProbeError("tls", f"TLS handshake with {server_name} failed: {error}") from None
    _add_phase(result, "tls", mark)
    record_tls(result, writer.get_extra_info("ssl_object"), verified=True)


def _add_phase(result: ProbeResult, phase: str, mark: float) -> None:
    result.phases[phase] = result.phases.get(phase, 0.0) + time.monotonic() - mark


async def _record_unverified(reconnect: Reconnect, tls: TLSConfig, server_name: str, result: ProbeResult,
                             log: ProbeLog) -> None:
    unverified = tls.model_copy(update={"insecure_skip_verify": True})
    try:
        _, writer = await reconnect()
    except (OSError, ProbeError) as error:
        log.debug("Reconnecting to record the unverified chain failed err=%s", error)
        return
    try:
        await writer.start_tls(build_ssl_context(unverified), server_hostname=server_name)
        record_tls(result, writer.get_extra_info("ssl_object"), verified=False)
    except (ssl.SSLError, ConnectionError) as error:
        log.debug("Unverified TLS handshake failed err=%s", error)
    finally:
        writer.transport.abort()


def record_tls(result: ProbeResult, ssl_object: ssl.SSLObject, verified: bool) -> None:
    """Record certificate expiry, TLS version and cipher gauges for a TLS session.

    blackbox_exporter's gauges (probe_ssl_earliest_cert_expiry,
    probe_ssl_last_chain_expiry_timestamp_seconds, probe_tls_version_info) are
    set only for a verified session, as blackbox does. The per-certificate
    gauge probe_tls_cert_expiry_timestamp_seconds{chain_position} and
    probe_tls_cert_verified are set for both.
    """
    expiries = []
    for position, der in enumerate(_peer_chain(ssl_object)):
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError:
            continue
        expiry = certificate.not_valid_after_utc.timestamp()
        expiries.append(expiry)
        result.set("probe_tls_cert_expiry_timestamp_seconds",
                   "Expiry of each certificate the server presented, by position in the chain (0 is the leaf)",
                   expiry, chain_position=str(position))
    result.set("probe_tls_cert_verified", "Whether the certificate chain passed verification (1) or not (0)",
               1 if verified else 0)
    if expiries:
        result.cert_expiry = min(expiries)
    cipher = ssl_object.cipher()
    if cipher:
        result.set("probe_tls_cipher_info", "The negotiated TLS cipher suite", 1, cipher=cipher[0])
    if not verified:
        return
    if expiries:
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
            return [c if isinstance(c, bytes) else c.public_bytes(_ssl.ENCODING_DER) for c in chain]
        except (ssl.SSLError, ValueError, AttributeError):
            pass
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []
