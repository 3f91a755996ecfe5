"""HTTP(S) prober with blackbox_exporter's metric names.

aiohttp's client reports TCP connect and the TLS handshake as one step, so this
prober opens the sockets itself and speaks HTTP/1.1 through h11. That gives
the five phases blackbox_exporter measures: resolve, connect, tls, processing
(request sent until the first response byte) and transfer (the body).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import re
import ssl
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

import h11

from ..config import HTTPProbeConfig, Module
from .net import ProbeError, format_address, resolve, run_steps, tls_handshake
from .result import AddressGuard, ProbeLog, ProbeResult

logger = logging.getLogger("slawatch.prober.http")

# Go's net/http client, which blackbox_exporter uses, stops after 10 redirects.
MAX_REDIRECTS = 10
USER_AGENT = "slawatch"
READ_SIZE = 65536
# Bodies are kept only when a body regexp needs them. Without a
# body_size_limit, a body over this size fails the probe with reason
# body_too_large rather than matching a truncated body.
MAX_BUFFERED_BODY = 16 * 1024 * 1024

PHASE_HELP = "Duration of http request by phase, summed over all redirects"
BLACKBOX_DEFAULT_GAUGES = [
    ("probe_http_content_length", "Length of http content response"),
    ("probe_http_uncompressed_body_length", "Length of uncompressed response body"),
    ("probe_http_redirects", "The number of redirects"),
    ("probe_http_ssl", "Indicates if SSL was used for the final redirect"),
    ("probe_http_status_code", "Response HTTP status code"),
    ("probe_http_version", "Returns the version of HTTP of the probe response"),
    ("probe_failed_due_to_regex", "Indicates if probe failed due to regex"),
]


# Bytes a request path keeps as they are: RFC 3986 unreserved characters,
# sub-delimiters, ":", "@" and "/", as Go's net/url leaves a valid path. Any
# other byte, and a "%" that does not start an escape, is percent-encoded.
_PATH_KEEP = rb"A-Za-z0-9\-._~!$&'()*+,;=:@/\[\]"
_PATH_ESCAPE = re.compile(rb"%[0-9A-Fa-f]{2}|[^" + _PATH_KEEP + rb"]")
# The query keeps every printable ASCII byte, as Go's client sends it.
_QUERY_ESCAPE = re.compile(rb"%[0-9A-Fa-f]{2}|[^\x21-\x7e]|%")
_AUTHORITY = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.\-]*:)?//[^/?#]*")


def _escape_bytes(pattern: re.Pattern, text: str) -> str:
    # surrogateescape gives back the bytes of a Location header that was not UTF-8.
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = text.encode("utf-8", "surrogatepass")
    return pattern.sub(lambda m: m[0] if len(m[0]) == 3 else b"%%%02X" % m[0][0], data).decode("ascii")


def escape_url(url: str) -> str:
    """Return `url` (absolute or a reference such as a Location value) in the ASCII form sent on the wire.

    Path and query bytes outside the allowed sets (non-ASCII, spaces, control
    characters) are percent-encoded from their UTF-8 form, and valid %XX
    escapes are kept, so "/été" becomes "/%C3%A9t%C3%A9" and "\\r\\n" can never
    end the request line. An internationalised host name becomes its IDNA
    (punycode) form. The fragment is dropped: it is never sent. Raises
    ProbeError when the host cannot be encoded.
    """
    match = _AUTHORITY.match(url)
    head, tail = (url[:match.end()], url[match.end():]) if match else ("", url)
    if re.search(r"[\x00-\x20\x7f]", head):
        raise ProbeError("invalid_target", f"{url!r} has a space or control character in its host")
    if not head.isascii():
        head = _ascii_authority(head)
    tail = tail.partition("#")[0]
    path, question, query = tail.partition("?")
    return head + _escape_bytes(_PATH_ESCAPE, path) + question + _escape_bytes(_QUERY_ESCAPE, query)


def _ascii_authority(head: str) -> str:
    prefix, _, authority = head.partition("//")
    userinfo, at, hostport = authority.rpartition("@")
    if hostport.startswith("["):
        host, port = hostport, ""
    else:
        host, colon, port = hostport.partition(":")
        port = colon + port
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError as error:
        raise ProbeError("invalid_target", f"host {host!r} is not a valid DNS name: {error}") from None
    return f"{prefix}//{_escape_bytes(_PATH_ESCAPE, userinfo)}{at}{host}{port}"


@dataclass
class _Response:
    status: int
    http_version: str
    headers: list[tuple[str, str]]
    body_bytes: int
    location: str | None
    tls: bool
    # Uncompressed body, kept only when a body regexp needs it.
    body: bytes = b""
    wire_bytes: int = 0
    transfer_seconds: float = 0.0

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)


@dataclass
class _Request:
    method: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


async def probe_http(target: str, module: Module, timeout: float, guard: AddressGuard | None = None) -> ProbeResult:
    """Probe an HTTP(S) URL and return blackbox-style gauges; a target fault is a failed result, not an exception."""
    result = ProbeResult()
    log = ProbeLog(logger, target)
    started = time.monotonic()
    # blackbox_exporter registers these before it resolves the target, so a
    # failed probe still exports them, with 0 unless the response set them.
    for name, help_text in BLACKBOX_DEFAULT_GAUGES:
        result.set(name, help_text, 0)
    await run_steps(_run(target, module.http, result, log, guard), timeout, result, log)
    result.duration = time.monotonic() - started
    result.probe_log = log
    for phase, seconds in result.phases.items():
        result.set("probe_http_duration_seconds", PHASE_HELP, seconds, phase=phase)
    return result


async def _run(target: str, options: HTTPProbeConfig, result: ProbeResult, log: ProbeLog,
               guard: AddressGuard | None) -> None:
    url = escape_url(target if "://" in target else f"http://{target}")
    request = _Request(options.method.upper(), _request_body(options), _credentials(options))
    parts = urlsplit(url)
    if parts.username is not None and "authorization" not in request.headers:
        # As Go's client: user information in the URL becomes basic auth.
        token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
        request.headers["authorization"] = f"Basic {token}"
    origin = urlsplit(url).netloc
    seen = {url}
    redirects = 0
    total_wire = 0
    total_transfer = 0.0

    looped_at = None
    while True:
        response = await _request_once(url, request, options, result, log, guard)
        total_wire += response.wire_bytes
        total_transfer += response.transfer_seconds
        if not (response.status in (301, 302, 303, 307, 308) and response.location):
            break
        if not options.follow_redirects:
            # blackbox_exporter counts the redirect its client declines to follow.
            redirects = 1
            break
        url = urljoin(url, escape_url(response.location))
        looped_at = looped_at or (url if url in seen else None)
        # As Go's client in blackbox_exporter: a loop is followed like any
        # chain, and the 11th redirect is counted but not followed, so the
        # probe exports the last status (a 3xx) and 11 redirects.
        redirects += 1
        if redirects > MAX_REDIRECTS:
            _record_response(result, response, redirects, total_wire, total_transfer, log)
            if looped_at:
                raise ProbeError("redirect_loop", f"redirect loop at {looped_at}")
            raise ProbeError("too_many_redirects", f"stopped after {MAX_REDIRECTS} redirects")
        seen.add(url)
        # As Go's client and browsers do: 303, and 301/302 after a POST, become a GET without a body.
        if response.status == 303 or (response.status in (301, 302) and request.method == "POST"):
            request.method, request.body = "GET", b""
        if urlsplit(url).netloc != origin:
            # Credentials go only to the host they were configured for.
            request.headers.pop("authorization", None)
        log.debug("Following redirect location=%s", url)

    _record_response(result, response, redirects, total_wire, total_transfer, log)
    _check_response(options, response, result, log)


def _record_response(result: ProbeResult, response: _Response, redirects: int, total_wire: int,
                     total_transfer: float, log: ProbeLog) -> None:
    """Set the gauges that describe the last response of the chain."""
    result.status_code = response.status
    result.set("probe_http_status_code", "Response HTTP status code", response.status)
    content_length = response.header("content-length")
    result.set("probe_http_content_length", "Length of http content response",
               int(content_length) if content_length and content_length.isdigit() else -1)
    result.set("probe_http_uncompressed_body_length", "Length of uncompressed response body", response.body_bytes)
    result.set("probe_http_redirects", "The number of redirects", redirects)
    result.set("probe_http_ssl", "Indicates if SSL was used for the final redirect", 1 if response.tls else 0)
    result.set("probe_http_version", "Returns the version of HTTP of the probe response", float(response.http_version))
    result.set("probe_failed_due_to_regex", "Indicates if probe failed due to regex", 0)
    if total_transfer > 0:
        result.transfer_rate = total_wire / total_transfer
        result.set("probe_http_transfer_bytes_per_second",
                   "Response body bytes received per second of the transfer phase, over all redirects",
                   result.transfer_rate)
    last_modified = response.header("last-modified")
    if last_modified:
        try:
            stamp = email.utils.parsedate_to_datetime(last_modified).timestamp()
            result.set("probe_http_last_modified_timestamp_seconds",
                       "Returns the Last-Modified HTTP response header in unixtime", stamp)
        except (TypeError, ValueError):
            log.debug("Ignoring unparsable Last-Modified header value=%s", last_modified)


def _request_body(options: HTTPProbeConfig) -> bytes:
    if options.body_file:
        try:
            return Path(options.body_file).read_bytes()
        except OSError as error:
            raise ProbeError("config", f"cannot read body_file {options.body_file}: {error.strerror}") from None
    return (options.body or "").encode()


def _read_secret(path: str, key: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ProbeError("config", f"cannot read {key} {path}: {error.strerror}") from None


def _credentials(options: HTTPProbeConfig) -> dict[str, str]:
    """Return the Authorization header from the module; secret values never reach the probe log."""
    if options.basic_auth is not None:
        auth = options.basic_auth
        if auth.password_file:
            password = _read_secret(auth.password_file, "basic_auth.password_file")
        else:
            password = auth.password.get_secret_value() if auth.password else ""
        token = base64.b64encode(f"{auth.username}:{password}".encode()).decode()
        return {"authorization": f"Basic {token}"}
    if options.authorization is not None:
        auth = options.authorization
        if auth.credentials_file:
            credentials = _read_secret(auth.credentials_file, "authorization.credentials_file")
        else:
            credentials = auth.credentials.get_secret_value() if auth.credentials else ""
        return {"authorization": f"{auth.type} {credentials}"}
    if options.bearer_token is not None:
        return {"authorization": f"Bearer {options.bearer_token.get_secret_value()}"}
    if options.bearer_token_file:
        return {"authorization": f"Bearer {_read_secret(options.bearer_token_file, 'bearer_token_file')}"}
    return {}


def _check_response(options: HTTPProbeConfig, response: _Response, result: ProbeResult, log: ProbeLog) -> None:
    if not _status_and_transport_ok(options, response, result, log):
        return
    if not _body_ok(options, response, result, log) or not _headers_ok(options, response, result, log):
        return
    result.success = True
    log.info("Probe succeeded status_code=%d", response.status)


def _body_ok(options: HTTPProbeConfig, response: _Response, result: ProbeResult, log: ProbeLog) -> bool:
    if options.expected_body_size is not None and response.body_bytes != options.expected_body_size:
        log.error("Body size differs from expected_body_size body_bytes=%d expected=%d", response.body_bytes,
                  options.expected_body_size)
        result.fail("body_size")
        return False
    text = response.body.decode("utf-8", errors="replace")
    for pattern in options.fail_if_body_matches_regexp:
        if re.search(pattern, text):
            log.error("Body matched regular expression regexp=%s", pattern)
            result.set("probe_failed_due_to_regex", "Indicates if probe failed due to regex", 1)
            result.fail("body_match")
            return False
    for pattern in options.fail_if_body_not_matches_regexp:
        if not re.search(pattern, text):
            log.error("Body did not match regular expression regexp=%s", pattern)
            result.set("probe_failed_due_to_regex", "Indicates if probe failed due to regex", 1)
            result.fail("body_match")
            return False
    return True


def _headers_ok(options: HTTPProbeConfig, response: _Response, result: ProbeResult, log: ProbeLog) -> bool:
    # blackbox_exporter fails fail_if_header_matches when any value of the
    # header matches, and fail_if_header_not_matches when none does.
    rules = [(rule, False) for rule in options.fail_if_header_matches]
    rules += [(rule, True) for rule in options.fail_if_header_not_matches]
    for rule, must_match in rules:
        values = [value for name, value in response.headers if name == rule.header.lower()]
        if not values:
            if rule.allow_missing:
                continue
            log.error("Missing required header header=%s", rule.header)
            result.set("probe_failed_due_to_regex", "Indicates if probe failed due to regex", 1)
            result.fail("header_match")
            return False
        matched = any(re.search(rule.regexp, value) for value in values)
        if matched != must_match:
            log.error("Header %s regular expression header=%s regexp=%s",
                      "did not match" if must_match else "matched", rule.header, rule.regexp)
            result.set("probe_failed_due_to_regex", "Indicates if probe failed due to regex", 1)
            result.fail("header_match")
            return False
    return True


def _status_and_transport_ok(options: HTTPProbeConfig, response: _Response, result: ProbeResult,
                             log: ProbeLog) -> bool:
    if options.valid_status_codes:
        status_ok = response.status in options.valid_status_codes
    else:
        status_ok = 200 <= response.status < 300
    if not status_ok:
        log.error("Invalid HTTP response status code status_code=%d", response.status)
        result.fail("http_status")
        return False

    version = f"HTTP/{response.http_version}"
    if options.valid_http_versions and version not in options.valid_http_versions:
        log.error("Invalid HTTP version number version=%s", version)
        result.fail("http_version")
        return False

    if options.fail_if_ssl and response.tls:
        log.error("Final request was over SSL")
        result.fail("ssl")
        return False
    if options.fail_if_not_ssl and not response.tls:
        log.error("Final request was not over SSL")
        result.fail("not_ssl")
        return False
    return True


async def _request_once(url: str, request: _Request, options: HTTPProbeConfig, result: ProbeResult, log: ProbeLog,
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

    # The target is resolved and checked by the guard even with a proxy, so
    # probe.allow holds for proxied probes too.
    mark = time.monotonic()
    resolved = await resolve(parts.hostname, options.preferred_ip_protocol, options.ip_protocol_fallback,
                             result, log, guard)
    phases["resolve"] = phases.get("resolve", 0.0) + time.monotonic() - mark
    proxy = urlsplit(options.proxy_url) if options.proxy_url else None

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if proxy is None:
            return await _open(resolved.ip, port)
        reader, writer = await _open(proxy.hostname, proxy.port or 80)
        if use_tls:
            await _proxy_connect(reader, writer, proxy, f"{parts.hostname}:{port}")
        return reader, writer

    mark = time.monotonic()
    try:
        reader, writer = await connect()
    finally:
        phases["connect"] = phases.get("connect", 0.0) + time.monotonic() - mark

    try:
        if use_tls:
            server_name = options.tls_config.server_name or parts.hostname
            await tls_handshake(writer, options.tls_config, server_name, result, log, connect)
        absolute = proxy is not None and not use_tls
        return await _exchange(reader, writer, parts, request, options, use_tls, absolute, phases, log)
    finally:
        writer.transport.abort()


async def _open(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.open_connection(host, port)
    except OSError as error:
        raise ProbeError("connect", f"connect to {format_address(host, port)} failed: {error.strerror or error}") \
            from None


def _proxy_authorization(proxy: SplitResult) -> dict[str, str]:
    if proxy.username is None:
        return {}
    token = base64.b64encode(f"{unquote(proxy.username)}:{unquote(proxy.password or '')}".encode()).decode()
    return {"proxy-authorization": f"Basic {token}"}


async def _proxy_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, proxy: SplitResult,
                         authority: str) -> None:
    """Open a tunnel through an HTTP proxy with CONNECT."""
    connection = h11.Connection(our_role=h11.CLIENT)
    headers = [("host", authority), *_proxy_authorization(proxy).items()]
    writer.write(connection.send(h11.Request(method="CONNECT", target=authority, headers=headers)))
    await writer.drain()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            chunk = await reader.read(READ_SIZE)
            if not chunk:
                raise ProbeError("proxy", "the proxy closed the connection during CONNECT")
            connection.receive_data(chunk)
        elif isinstance(event, h11.Response):
            if not 200 <= event.status_code < 300:
                raise ProbeError("proxy", f"the proxy rejected CONNECT with status {event.status_code}")
            return


# Decompressed output is produced in pieces of at most this size, so a
# compression bomb never keeps more than one piece in memory.
INFLATE_PIECE = 1024 * 1024


def _decoded(decoder, data: bytes, compression: str):
    """Yield the decompressed pieces of `data`, or `data` itself without a decoder. Raises ProbeError."""
    if decoder is None:
        yield data
        return
    try:
        piece = decoder.decompress(data, INFLATE_PIECE)
        while piece:
            yield piece
            if not decoder.unconsumed_tail:
                break
            piece = decoder.decompress(decoder.unconsumed_tail, INFLATE_PIECE)
    except zlib.error as error:
        raise ProbeError("compression", f"cannot decompress the {compression} body: {error}") from None


def _decoder(encoding: str):
    if encoding == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    return None


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, parts: SplitResult,
                    request: _Request, options: HTTPProbeConfig, use_tls: bool, absolute: bool,
                    phases: dict[str, float], log: ProbeLog) -> _Response:
    connection = h11.Connection(our_role=h11.CLIENT)
    body = request.body
    headers = {"host": parts.netloc.rpartition("@")[2], "user-agent": USER_AGENT, "accept": "*/*",
               "connection": "close"}
    if options.compression and options.compression != "identity":
        headers["accept-encoding"] = options.compression
    headers.update(request.headers)
    headers.update({name.lower(): value for name, value in options.headers.items()})
    if absolute and options.proxy_url:
        headers.update(_proxy_authorization(urlsplit(options.proxy_url)))
    if body or request.method in ("POST", "PUT", "PATCH"):
        headers["content-length"] = str(len(body))
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    if absolute:
        path = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{path}"

    mark = time.monotonic()
    try:
        payload = connection.send(h11.Request(method=request.method, target=path, headers=list(headers.items())))
        if body:
            payload += connection.send(h11.Data(data=body))
        payload += connection.send(h11.EndOfMessage())
        writer.write(payload)
        await writer.drain()
    except (ConnectionError, h11.LocalProtocolError) as error:
        raise ProbeError("connect", f"sending the request failed: {error}") from None

    keep_body = bool(options.fail_if_body_matches_regexp or options.fail_if_body_not_matches_regexp)
    limit = options.body_size_limit or None
    response: h11.Response | None = None
    decoder = None
    kept = bytearray()
    body_bytes = 0
    wire_bytes = 0
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
            encoding = dict(event.headers).get(b"content-encoding", b"").decode("latin-1").strip().lower()
            if options.compression and options.compression != "identity" and encoding == options.compression:
                decoder = _decoder(encoding)
        elif isinstance(event, h11.InformationalResponse):
            continue
        elif isinstance(event, h11.Data):
            wire_bytes += len(event.data)
            for data in _decoded(decoder, event.data, options.compression):
                body_bytes += len(data)
                if limit is not None and body_bytes > limit:
                    raise ProbeError("body_too_large", f"the body is larger than body_size_limit {limit} bytes")
                if keep_body:
                    if len(kept) + len(data) > MAX_BUFFERED_BODY:
                        raise ProbeError("body_too_large",
                                         f"the body is larger than {MAX_BUFFERED_BODY} bytes, the most kept for "
                                         "body regexps: set body_size_limit")
                    kept += data
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            break

    transfer_start = first_byte_at if first_byte_at is not None else mark
    transfer_seconds = time.monotonic() - transfer_start
    phases["transfer"] = phases.get("transfer", 0.0) + transfer_seconds
    if response is None:
        raise ProbeError("empty_reply", "the connection closed before a response arrived")
    response_headers = [(name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in response.headers]
    log.debug("Received HTTP response status_code=%d body_bytes=%d", response.status_code, body_bytes)
    location = next((value for name, value in response_headers if name == "location"), None)
    if location is not None:
        # Back to the header's bytes; escape_url percent-encodes any that are not ASCII.
        location = location.encode("latin-1").decode("utf-8", "surrogateescape")
    return _Response(
        status=response.status_code,
        http_version=response.http_version.decode(),
        headers=response_headers,
        body_bytes=body_bytes,
        location=location,
        tls=use_tls,
        body=bytes(kept),
        wire_bytes=wire_bytes,
        transfer_seconds=transfer_seconds,
    )
