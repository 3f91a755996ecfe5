"""TCP prober, plain or TLS, with query_response dialogues and blackbox_exporter's metric names."""

from __future__ import annotations

import asyncio
import logging
import re
import time

from ..config import Module, QueryResponse, split_host_port
from .net import ProbeError, format_address, resolve, run_steps, tls_handshake
from .result import AddressGuard, ProbeLog, ProbeResult

logger = logging.getLogger("slawatch.prober.tcp")

# An `expect` step reads lines until one matches; a line longer than this
# fails the probe so a server cannot grow the buffer without end.
MAX_LINE_BYTES = 64 * 1024


async def probe_tcp(target: str, module: Module, timeout: float, guard: AddressGuard | None = None) -> ProbeResult:
    """Open a TCP (optionally TLS) connection and run query_response; a target fault is a failed result."""
    result = ProbeResult()
    log = ProbeLog(logger, target)
    started = time.monotonic()
    if await run_steps(_connect(target, module, result, log, guard), timeout, result, log):
        result.success = True
        log.debug("Successfully dialed")
    if result.reason == "expect":
        result.set("probe_failed_due_to_regex", "Indicates if probe failed due to regex", 1)
    result.duration = time.monotonic() - started
    result.probe_log = log
    return result


async def _connect(target: str, module: Module, result: ProbeResult, log: ProbeLog,
                   guard: AddressGuard | None) -> None:
    options = module.tcp
    host, port = split_host_port(target)
    if not host or port is None:
        raise ProbeError("invalid_target", f"{target!r} is not host:port")

    resolved = await resolve(host, options.preferred_ip_protocol, options.ip_protocol_fallback, result, log, guard)
    result.set("probe_failed_due_to_regex", "Indicates if probe failed due to regex", 0)

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_connection(resolved.ip, port, limit=MAX_LINE_BYTES)
        except OSError as error:
            address = format_address(resolved.ip, port)
            raise ProbeError("connect", f"connect to {address} failed: {error.strerror or error}") from None

    mark = time.monotonic()
    reader, writer = await connect()
    result.phases["connect"] = time.monotonic() - mark

    server_name = options.tls_config.server_name or host
    try:
        if options.tls:
            await tls_handshake(writer, options.tls_config, server_name, result, log, connect)
        await _query_response(reader, writer, options.query_response, options.tls_config, server_name, result, log,
                              connect)
    finally:
        writer.transport.abort()


async def _query_response(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, steps: list[QueryResponse],
                          tls_config, server_name: str, result: ProbeResult, log: ProbeLog, connect) -> None:
    """Run blackbox_exporter's query_response steps: expect a line, send a line (with ${1} from the match), starttls."""
    match: re.Match | None = None
    for index, step in enumerate(steps):
        if step.expect is not None:
            pattern = re.compile(step.expect)
            match = None
            while match is None:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as error:
                    line = error.partial
                    if not line:
                        raise ProbeError("expect", f"step {index}: the connection closed before {step.expect!r} "
                                                   "matched") from None
                except asyncio.LimitOverrunError:
                    raise ProbeError("expect", f"step {index}: a line is longer than {MAX_LINE_BYTES} bytes") \
                        from None
                text = line.decode("utf-8", errors="replace").rstrip("\r\n")
                log.debug("Read line line=%s", text[:200])
                match = pattern.search(text)
            log.debug("Regexp matched regexp=%s", step.expect)
        if step.send is not None:
            line = step.send
            if match is not None:
                line = re.sub(r"\$\{(\d+)\}", lambda m: match.group(int(m.group(1))) or "", line)
            writer.write(line.encode() + b"\n")
            await writer.drain()
        if step.starttls:
            await tls_handshake(writer, tls_config, server_name, result, log, connect)
