"""TCP connect prober, plain or TLS, with blackbox_exporter's metric names."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time

from ..config import Module, split_host_port
from .net import ProbeError, build_ssl_context, format_address, record_tls, resolve
from .result import AddressGuard, ProbeLog, ProbeResult

logger = logging.getLogger("slawatch.prober.tcp")


async def probe_tcp(target: str, module: Module, timeout: float, guard: AddressGuard | None = None) -> ProbeResult:
    """Open a TCP (optionally TLS) connection to host:port; a target fault is a failed result, not an exception."""
    result = ProbeResult()
    log = ProbeLog(logger, target)
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            await _connect(target, module, result, log, guard)
        result.success = True
        log.debug("Successfully dialed")
    except TimeoutError:
        log.error("Probe timed out timeout_seconds=%.3f", timeout)
        result.fail("timeout")
    except ProbeError as error:
        log.error("Probe failed reason=%s err=%s", error.reason, error)
        result.fail(error.reason)
        result.error = str(error)
    result.duration = time.monotonic() - started
    result.log_lines = log.lines
    return result


async def _connect(target: str, module: Module, result: ProbeResult, log: ProbeLog,
                   guard: AddressGuard | None) -> None:
    options = module.tcp
    host, port = split_host_port(target)
    if not host or port is None:
        raise ProbeError("invalid_target", f"{target!r} is not host:port")

    resolved = await resolve(host, options.preferred_ip_protocol, options.ip_protocol_fallback, result, log, guard)

    mark = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(resolved.ip, port)
    except OSError as error:
        address = format_address(resolved.ip, port)
        raise ProbeError("connect", f"connect to {address} failed: {error.strerror or error}") from None
    result.phases["connect"] = time.monotonic() - mark

    try:
        if options.tls:
            context = build_ssl_context(options.tls_config)
            mark = time.monotonic()
            try:
                await writer.start_tls(context, server_hostname=options.tls_config.server_name or host)
            except (ssl.SSLError, ConnectionError) as error:
                raise ProbeError("tls", f"TLS handshake with {host} failed: {error}") from None
            result.phases["tls"] = time.monotonic() - mark
            record_tls(result, writer.get_extra_info("ssl_object"))
    finally:
        writer.transport.abort()
