"""Targets that misbehave on purpose: each probe must end on time with the right reason.

Every server here is a raw asyncio server on 127.0.0.1 that counts its
connections, so each test also checks that the prober sent no flood of
requests. Durations are checked only against the probe timeout plus a wide
margin for a slow, shared machine.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from slawatch.config import Module
from slawatch.probers import probe_http, probe_tcp

pytestmark = pytest.mark.both_loops

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
# Seconds a probe may run past its timeout on a busy machine.
SLACK = 2.0


class RawServer:
    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None):
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0
        self.requests = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task] = set()

    async def start(self) -> "RawServer":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ssl_context)
        return self

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.tasks.add(asyncio.current_task())
        try:
            await asyncio.wait_for(self.handler(reader, writer), 30)
        except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            # close() cancels handlers still running; ending quietly keeps
            # asyncio from logging the cancellation as an error.
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.server.close()


@pytest.fixture
async def serve():
    servers: list[RawServer] = []

    async def start(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> RawServer:
        server = await RawServer(handler, ssl_context).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


def module(timeout: float = 1.0, **http) -> Module:
    return Module.model_validate({"prober": "http", "timeout": timeout, "http": http})


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def run(target: str, mod: Module) -> tuple[object, float]:
    started = time.monotonic()
    result = await probe_http(target, mod, mod.timeout)
    return result, time.monotonic() - started


async def test_endless_redirect_chain(serve):
    async def handler(reader, writer):
        request = await read_request(reader)
        server.requests += 1
        number = int(request.split(b" ")[1].rsplit(b"/", 1)[1] or b"0")
        writer.write(f"HTTP/1.1 302 Found\r\nLocation: /r/{number + 1}\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()

    server = await serve(handler)
    result, elapsed = await run(f"http://127.0.0.1:{server.port}/r/0", module(5.0))

    assert result.success is False
    assert result.reason == "too_many_redirects"
    assert server.requests == 11
    assert elapsed < 5.0 + SLACK


async def test_redirect_loop_stops_at_the_redirect_limit(serve):
    async def handler(reader, writer):
        await read_request(reader)
        server.requests += 1
        writer.write(b"HTTP/1.1 301 Moved\r\nLocation: /same\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    server = await serve(handler)
    result, _ = await run(f"http://127.0.0.1:{server.port}/same", module())

    # As blackbox_exporter: the loop is followed up to the limit, then the last
    # status and the count of redirects (one past the limit) are exported.
    assert result.reason == "redirect_loop"
    assert server.requests == 11
    assert result.gauges["probe_http_status_code"].samples[()] == 301
    assert result.gauges["probe_http_redirects"].samples[()] == 11


async def endless_chunks(reader, writer):
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (16384, b"x" * 16384)
    while True:
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0)


async def test_endless_chunked_body_times_out_in_bounded_memory(serve):
    server = await serve(endless_chunks)

    tracemalloc.start()
    try:
        result, elapsed = await run(f"http://127.0.0.1:{server.port}/", module(1.0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result.success is False
    assert result.reason == "timeout"
    assert elapsed < 1.0 + SLACK
    # The body is counted, not kept: the peak stays far below what was sent.
    assert peak < 8 * 1024 * 1024
    assert server.connections == 1


async def test_endless_chunked_body_hits_size_limit(serve):
    server = await serve(endless_chunks)

    result, elapsed = await run(f"http://127.0.0.1:{server.port}/", module(5.0, body_size_limit="256KB"))

    assert result.reason == "body_too_large"
    assert elapsed < 5.0


async def test_short_body_then_stall(serve):
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\npartial")
        await writer.drain()
        await asyncio.sleep(30)

    server = await serve(handler)
    result, elapsed = await run(f"http://127.0.0.1:{server.port}/", module(1.0))

    assert result.success is False
    assert result.reason == "timeout"
    assert elapsed < 1.0 + SLACK


async def test_short_body_then_close(serve):
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\npartial")
        await writer.drain()

    server = await serve(handler)
    result, _ = await run(f"http://127.0.0.1:{server.port}/", module(2.0))

    assert result.success is False
    assert result.reason == "http_protocol"


async def test_empty_reply(serve):
    async def handler(reader, writer):
        await read_request(reader)

    server = await serve(handler)
    result, _ = await run(f"http://127.0.0.1:{server.port}/", module())

    assert result.reason == "empty_reply"


async def test_endless_header_is_rejected(serve):
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Big: ")
        while True:
            writer.write(b"a" * 65536)
            await writer.drain()

    server = await serve(handler)
    result, elapsed = await run(f"http://127.0.0.1:{server.port}/", module(5.0))

    assert result.reason == "http_protocol"
    assert elapsed < 5.0


async def test_silent_tls_server(serve):
    async def handler(reader, writer):
        # Accept the connection, read the ClientHello and never reply.
        while await reader.read(4096):
            pass

    server = await serve(handler)
    result, elapsed = await run(f"https://127.0.0.1:{server.port}/", module(1.0))

    assert result.success is False
    assert result.reason == "timeout"
    assert elapsed < 1.0 + SLACK
    assert server.connections == 1


async def test_silent_tcp_tls_server(serve):
    async def handler(reader, writer):
        while await reader.read(4096):
            pass

    server = await serve(handler)
    mod = Module.model_validate({"prober": "tcp", "timeout": 1.0, "tcp": {"tls": True}})
    started = time.monotonic()
    result = await probe_tcp(f"127.0.0.1:{server.port}", mod, 1.0)

    assert result.reason == "timeout"
    assert time.monotonic() - started < 1.0 + SLACK


# --- certificates built with cryptography, so the intermediate can be expired ---


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, key, issuer: str, issuer_key, not_before, not_after, ca: bool, san: bool = False):
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False), critical=True)
    if san:
        import ipaddress

        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def build_chain(tmp_path: Path, intermediate_expired: bool) -> tuple[ssl.SSLContext, Path, list[float]]:
    """Return a server context presenting leaf + intermediate, the root CA file, and the chain's expiries."""
    now = datetime.datetime.now(datetime.timezone.utc)
    year = datetime.timedelta(days=365)
    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _certificate("test root", root_key, "test root", root_key, now - year, now + 10 * year, ca=True)
    if intermediate_expired:
        mid_window = (now - 2 * year, now - datetime.timedelta(days=1))
    else:
        mid_window = (now - year, now + 5 * year)
    mid = _certificate("test intermediate", mid_key, "test root", root_key, *mid_window, ca=True)
    leaf = _certificate("127.0.0.1", leaf_key, "test intermediate", mid_key, now - datetime.timedelta(days=1),
                        now + year, ca=False, san=True)

    chain_file = tmp_path / "chain.pem"
    chain_file.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, mid)))
    key_file = tmp_path / "leaf.key"
    key_file.write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    root_file = tmp_path / "root.pem"
    root_file.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(chain_file, key_file)
    return context, root_file, [leaf.not_valid_after_utc.timestamp(), mid.not_valid_after_utc.timestamp()]


async def answer_ok(reader, writer):
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    await writer.drain()


@pytest.mark.parametrize(("expired", "success", "reason"), [(False, True, ""), (True, False, "cert_expired")])
async def test_chain_with_intermediate(serve, tmp_path: Path, expired, success, reason):
    context, root_file, expiries = build_chain(tmp_path, intermediate_expired=expired)
    hellos = []
    # Called once per ClientHello, also for handshakes that fail verification
    # and so never reach the connection handler.
    context.sni_callback = lambda *args: hellos.append(1)
    server = await serve(answer_ok, context)

    result, _ = await run(f"https://127.0.0.1:{server.port}/", module(3.0, tls_config={"ca_file": str(root_file)}))
    samples = result.gauges["probe_tls_cert_expiry_timestamp_seconds"].samples

    assert result.success is success, result.log_lines
    assert result.reason == reason
    assert samples[(("chain_position", "0"),)] == pytest.approx(expiries[0], abs=1)
    assert samples[(("chain_position", "1"),)] == pytest.approx(expiries[1], abs=1)
    assert result.cert_expiry == pytest.approx(min(expiries), abs=1)
    # An expired chain costs one extra, unverified handshake and nothing more.
    assert len(hellos) == (2 if expired else 1)


async def test_gzip_bomb_stops_at_limit(serve):
    import gzip

    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)

    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb) + bomb)
        await writer.drain()

    server = await serve(handler)
    tracemalloc.start()
    try:
        result, _ = await run(f"http://127.0.0.1:{server.port}/", module(5.0, compression="gzip",
                                                                         body_size_limit="1MB"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result.reason == "body_too_large"
    assert peak < 16 * 1024 * 1024


async def test_gzip_bomb_without_limit_is_counted_in_pieces(serve):
    import gzip

    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)

    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb) + bomb)
        await writer.drain()

    server = await serve(handler)
    tracemalloc.start()
    try:
        result, _ = await run(f"http://127.0.0.1:{server.port}/", module(10.0, compression="gzip"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result.success is True, result.log_lines
    assert result.gauges["probe_http_uncompressed_body_length"].samples[()] == 64 * 1024 * 1024
    assert peak < 16 * 1024 * 1024
