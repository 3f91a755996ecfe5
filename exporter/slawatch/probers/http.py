"""HTTP(S) prober with blackbox_exporter's metric names.

aiohttp's client reports TCP connect and the TLS handshake as one step, so this
prober opens the sockets itself and speaks HTTP/1.1 through h11. That gives
the five phases blackbox_exporter measures: resolve, connect, tls, processing
(request sent until the first response byte) and transfer (the body).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import h11

from ..config import HTTPProbeConfig, Module
from .net import ProbeError, build_ssl_context, format_address, record_tls, resolve
from .result import AddressGuard, ProbeLog, ProbeResult

logger = logging.getLogger("slawatch.prober.http")

MAX_REDIRECTS = 10
USER_AGENT = "slawatch"
READ_SIZE = 65536

PHASE_HELP = "Duration of http request by phase, summed over all redirects"


@dataclass
class _Response:
    status: int
    http_version: str
    headers: dict[str, str]
    body_bytes: int
    location: str | None
    tls: bool


async def probe_http(target: str, module: Module, timeout: float, guard: AddressGuard | None = None) -> ProbeResult:
    """Probe an HTTP(S) URL and return blackbox-style gauges; a target fault is a failed result, not an exception."""
    result = ProbeResult()
    log = ProbeLog(logger, target)
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            await _run(target, module.http, result, log, guard)
    except TimeoutError:
        log.error("Probe timed out timeout_seconds=%.3f", timeout)
        result.fail("timeout")
    except ProbeError as error:
        log.error("Probe failed reason=%s err=%s", error.reason, error)
        result.fail(error.reason)
        result.error = str(error)
    result.duration = time.monotonic() - started
    result.log_lines = log.lines
    for phase, seconds in result.phases.items():
        result.set("probe_http_duration_seconds", PHASE_HELP, seconds, phase=phase)
    return result


async def _run(target: str, options: HTTPProbeConfig, result: ProbeResult, log: ProbeLog,
               guard: AddressGuard | None) -> None:
    url = target if "://" in target else f"http://{target}"
    seen = {url}
    redirects = 0

    while True:
        response = await _request_once(url, options, result, log, guard)
        if not (options.follow_redirects and 300 <= response.status < 400 and response.location):
            break
        url = urljoin(url, response.location)
        if url in seen:
            raise ProbeError("redirect_loop", f"redirect loop at {url}")
        if redirects >= MAX_REDIRECTS:
            raise ProbeError("redirect_loop", f"stopped after {MAX_REDIRECTS} redirects")
        seen.add(url)
        redirects += 1
        log.debug("Following redirect location=%s", url)

    result.status_code = response.status
    result.set("probe_http_status_code", "Response HTTP status code", response.status)
    content_length = response.headers.get("content-length")
    result.set("probe_http_content_length", "Length of http content response",
               int(content_length) if content_length and content_length.isdigit() else -1)
    result.set("probe_http_uncompressed_body_length", "Length of uncompressed response body", response.body_bytes)
    result.set("probe_http_redirects", "The number of redirects", redirects)
    result.set("probe_http_ssl", "Indicates if SSL was used for the final redirect", 1 if response.tls else 0)
    result.set("probe_http_version", "Returns the version of HTTP of the probe response", float(response.http_version))
    result.set("probe_failed_due_to_regex", "Indicates if probe failed due to regex", 0)
    last_modified = response.headers.get("last-modified")
    if last_modified:
        try:
            stamp = email.utils.parsedate_to_datetime(last_modified).timestamp()
            result.set("probe_http_last_modified_timestamp_seconds",
                       "Returns the Last-Modified HTTP response header in unixtime", stamp)
        except (TypeError, ValueError):
            log.debug("Ignoring unparsable Last-Modified header value=%s", last_modified)

    _check_response(options, response, result, log)


def _check_response(options: HTTPProbeConfig, response: _Response, result: ProbeResult, log: ProbeLog) -> None:
    if options.valid_status_codes:
        status_ok = response.status in options.valid_status_codes
    else:
        status_ok = 200 <= response.status < 300
    if not status_ok:
        log.error("Invalid HTTP response status code status_code=%d", response.status)
        result.fail("http_status")
        return

    version = f"HTTP/{response.http_version}"
    if options.valid_http_versions and version not in options.valid_http_versions:
        log.error("Invalid HTTP version number version=%s", version)
        result.fail("http_version")
        return

    if options.fail_if_ssl and response.tls:
        log.error("Final request was over SSL")
        result.fail("ssl")
        return
    if options.fail_if_not_ssl and not response.tls:
        log.error("Final request was not over SSL")
        result.fail("not_ssl")
        return

    result.success = True
    log.debug("Probe succeeded status_code=%d", response.status)


async def _request_once(url: str, options: HTTPProbeConfig, result: ProbeResult, log: ProbeLog,
                        guard: AddressGuard | None) -> _Response:
    try:
        parts = urlsplit(url)
        parts.port
    except ValueError:
        raise ProbeError("invalid_target", f"{url!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProbeError("invalid_target", f"{url!r} is not an http:// or https:// URL")
    use_tls = parts.scheme == "https"
    port = parts.port or (443 if use_tls else 80)
    phases = result.phases

    mark = time.monotonic()
    resolved = await resolve(parts.hostname, options.preferred_ip_protocol, options.ip_protocol_fallback,
                             result, log, guard)
    phases["resolve"] = phases.get("resolve", 0.0) + time.monotonic() - mark

    mark = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(resolved.ip, port)
    except OSError as error:
        phases["connect"] = phases.get("connect", 0.0) + time.monotonic() - mark
        address = format_address(resolved.ip, port)
        raise ProbeError("connect", f"connect to {address} failed: {error.strerror or error}") from None
    phases["connect"] = phases.get("connect", 0.0) + time.monotonic() - mark

    try:
        if use_tls:
            mark = time.monotonic()
            context = build_ssl_context(options.tls_config)
            server_name = options.tls_config.server_name or parts.hostname
            try:
                await writer.start_tls(context, server_hostname=server_name)
            except (ssl.SSLError, ConnectionError) as error:
                phases["tls"] = phases.get("tls", 0.0) + time.monotonic() - mark
                raise ProbeError("tls", f"TLS handshake with {parts.hostname} failed: {error}") from None
            phases["tls"] = phases.get("tls", 0.0) + time.monotonic() - mark
            record_tls(result, writer.get_extra_info("ssl_object"))

        return await _exchange(reader, writer, parts, options, use_tls, phases, log)
    finally:
        writer.transport.abort()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, parts, options: HTTPProbeConfig,
                    use_tls: bool, phases: dict[str, float], log: ProbeLog) -> _Response:
    connection = h11.Connection(our_role=h11.CLIENT)
    body = (options.body or "").encode()
    headers = {"host": parts.netloc.rpartition("@")[2], "user-agent": USER_AGENT, "accept": "*/*",
               "connection": "close"}
    headers.update({name.lower(): value for name, value in options.headers.items()})
    if body or options.method.upper() in ("POST", "PUT", "PATCH"):
        headers["content-length"] = str(len(body))
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"

    mark = time.monotonic()
    try:
        payload = connection.send(h11.Request(method=options.method.upper(), target=path, headers=list(headers.items())))
        if body:
            payload += connection.send(h11.Data(data=body))
        payload += connection.send(h11.EndOfMessage())
        writer.write(payload)
        await writer.drain()
    except (ConnectionError, h11.LocalProtocolError) as error:
        raise ProbeError("connect", f"sending the request failed: {error}") from None

    response: h11.Response | None = None
    body_bytes = 0
    first_byte_at: float | None = None
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError as error:
            reason = "empty_reply" if response is None and first_byte_at is None else "http_protocol"
            raise ProbeError(reason, f"invalid HTTP response: {error}") from None

        if event is h11.NEED_DATA:
            try:
                chunk = await reader.read(READ_SIZE)
            except (ConnectionError, ssl.SSLError) as error:
                raise ProbeError("connect", f"reading the response failed: {error}") from None
            if first_byte_at is None and chunk:
                first_byte_at = time.monotonic()
                phases["processing"] = phases.get("processing", 0.0) + first_byte_at - mark
            if not chunk and first_byte_at is None:
                raise ProbeError("empty_reply", "the server closed the connection without a response")
            connection.receive_data(chunk)
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.InformationalResponse):
            continue
        elif isinstance(event, h11.Data):
            body_bytes += len(event.data)
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            break

    transfer_start = first_byte_at if first_byte_at is not None else mark
    phases["transfer"] = phases.get("transfer", 0.0) + time.monotonic() - transfer_start
    if response is None:
        raise ProbeError("empty_reply", "the connection closed before a response arrived")
    response_headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in response.headers}
    log.debug("Received HTTP response status_code=%d body_bytes=%d", response.status_code, body_bytes)
    return _Response(
        status=response.status_code,
        http_version=response.http_version.decode(),
        headers=response_headers,
        body_bytes=body_bytes,
        location=response_headers.get("location"),
        tls=use_tls,
    )
