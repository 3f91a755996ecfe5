"""Probers against real local servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
import time
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from slawatch.config import Module
from slawatch.probers import probe_http, probe_tcp
from slawatch.probers.result import ProbeLog

from conftest import free_port

pytestmark = pytest.mark.both_loops


def http_module(**options) -> Module:
    return Module.model_validate({"prober": "http", "timeout": "3s", "http": options})


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.Response(text="late")


def respond(status: int = 200, text: str = "hello", location: str | None = None):
    async def handler(request: web.Request) -> web.Response:
        headers = {"Location": location} if location else None
        return web.Response(status=status, text=text, headers=headers)

    return handler


def target_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/ok", respond())
    app.router.add_post("/echo", _echo)
    app.router.add_get("/error", respond(503, "down"))
    app.router.add_get("/moved", respond(302, "", "/ok"))
    app.router.add_get("/loop", respond(302, "", "/loop2"))
    app.router.add_get("/loop2", respond(302, "", "/loop"))
    app.router.add_get("/slow", slow)
    return app


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.Response(text=f"{request.method} {len(body)} {request.headers.get('X-Test', '')}")


@pytest.fixture
async def target(aiohttp_server):
    return await aiohttp_server(target_app())


def gauge(result, name: str, **labels) -> float:
    return result.gauges[name].samples[tuple(sorted(labels.items()))]


CASES = [
    # (path, module options, success, reason, status code)
    ("/ok", {}, True, "", 200),
    ("/error", {}, False, "http_status", 503),
    ("/error", {"valid_status_codes": [503]}, True, "", 503),
    ("/moved", {}, True, "", 200),
    ("/moved", {"follow_redirects": False}, False, "http_status", 302),
    ("/moved", {"follow_redirects": False, "valid_status_codes": [302]}, True, "", 302),
    ("/loop", {}, False, "redirect_loop", 302),
    ("/ok", {"fail_if_not_ssl": True}, False, "not_ssl", 200),
    ("/ok", {"valid_http_versions": ["HTTP/2.0"]}, False, "http_version", 200),
]


@pytest.mark.parametrize(("path", "options", "success", "reason", "status"), CASES)
async def test_http_prober_cases(target, path, options, success, reason, status):
    result = await probe_http(str(target.make_url(path)), http_module(**options), 3.0)

    assert result.success is success, result.log_lines
    assert result.reason == reason
    assert result.status_code == status
    if status:
        assert gauge(result, "probe_http_status_code") == status


async def test_http_prober_phases_and_sizes(target):
    result = await probe_http(str(target.make_url("/ok")), http_module(), 3.0)

    assert set(result.phases) == {"resolve", "connect", "processing", "transfer"}
    assert gauge(result, "probe_http_content_length") == 5
    assert gauge(result, "probe_http_uncompressed_body_length") == 5
    assert gauge(result, "probe_http_ssl") == 0
    assert gauge(result, "probe_http_version") == 1.1
    assert gauge(result, "probe_ip_protocol") == 4
    assert gauge(result, "probe_http_duration_seconds", phase="connect") == result.phases["connect"]
    assert "tls" not in {dict(k).get("phase") for k in result.gauges["probe_http_duration_seconds"].samples}


async def test_http_prober_counts_redirects(target):
    result = await probe_http(str(target.make_url("/moved")), http_module(), 3.0)

    assert gauge(result, "probe_http_redirects") == 1


async def test_http_prober_sends_method_body_headers(target):
    module = http_module(method="POST", body="abcdef", headers={"X-Test": "yes"})
    result = await probe_http(str(target.make_url("/echo")), module, 3.0)

    assert result.success, result.log_lines
    assert gauge(result, "probe_http_uncompressed_body_length") == len("POST 6 yes")


async def test_http_prober_times_out_within_deadline(target):
    started = time.monotonic()
    result = await probe_http(str(target.make_url("/slow")), http_module(), 0.5)
    elapsed = time.monotonic() - started

    assert result.success is False
    assert result.reason == "timeout"
    assert elapsed < 2.0


async def test_http_prober_connection_refused():
    port = free_port()
    result = await probe_http(f"http://127.0.0.1:{port}/", http_module(), 2.0)

    assert result.success is False
    assert result.reason == "connect"
    # As blackbox_exporter 0.23, the response gauges exist with 0 after a failed connect.
    assert gauge(result, "probe_http_status_code") == 0


async def test_http_prober_guard_denies_before_connecting(target):
    seen = []

    def guard(host: str, ip: str) -> str | None:
        seen.append((host, ip))
        return "denied for the test"

    result = await probe_http(str(target.make_url("/ok")), http_module(), 2.0, guard)

    assert seen == [("127.0.0.1", "127.0.0.1")]
    assert result.reason == "denied"
    assert "connect" not in result.phases


@pytest.fixture(scope="module")
def certificate_authority():
    return trustme.CA()


async def start_tls_server(aiohttp_server, ca: trustme.CA, **issue) -> tuple[object, trustme.LeafCert]:
    leaf = ca.issue_cert("localhost", "127.0.0.1", **issue)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    server = await aiohttp_server(target_app(), ssl=context)
    return server, leaf


async def test_https_prober_records_tls(aiohttp_server, certificate_authority, tmp_path: Path):
    server, leaf = await start_tls_server(aiohttp_server, certificate_authority)
    ca_file = tmp_path / "ca.pem"
    certificate_authority.cert_pem.write_to_path(str(ca_file))
    module = http_module(tls_config={"ca_file": str(ca_file)}, fail_if_not_ssl=True)

    result = await probe_http(f"https://127.0.0.1:{server.port}/ok", module, 3.0)

    assert result.success, result.log_lines
    assert "tls" in result.phases
    assert gauge(result, "probe_http_ssl") == 1
    from cryptography import x509

    expiry = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).not_valid_after_utc.timestamp()
    assert gauge(result, "probe_ssl_earliest_cert_expiry") <= expiry
    assert result.cert_expiry == gauge(result, "probe_ssl_earliest_cert_expiry")
    versions = {dict(k)["version"] for k in result.gauges["probe_tls_version_info"].samples}
    assert versions
    assert versions <= {"TLS 1.2", "TLS 1.3"}


async def test_https_prober_rejects_untrusted_cert(aiohttp_server, certificate_authority):
    server, _ = await start_tls_server(aiohttp_server, certificate_authority)

    result = await probe_http(f"https://127.0.0.1:{server.port}/ok", http_module(), 3.0)

    assert result.success is False
    assert result.reason == "cert_untrusted"
    assert gauge(result, "probe_tls_cert_verified") == 0
    assert "probe_ssl_earliest_cert_expiry" not in result.gauges


async def test_https_prober_insecure_skip_verify(aiohttp_server, certificate_authority):
    server, _ = await start_tls_server(aiohttp_server, certificate_authority)
    module = http_module(tls_config={"insecure_skip_verify": True})

    result = await probe_http(f"https://127.0.0.1:{server.port}/ok", module, 3.0)

    assert result.success, result.log_lines
    assert result.cert_expiry is not None


async def test_https_prober_expired_cert_fails(aiohttp_server, certificate_authority, tmp_path: Path):
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=2)
    server, _ = await start_tls_server(aiohttp_server, certificate_authority,
                                       not_before=past - datetime.timedelta(days=30), not_after=past)
    ca_file = tmp_path / "ca.pem"
    certificate_authority.cert_pem.write_to_path(str(ca_file))

    result = await probe_http(f"https://127.0.0.1:{server.port}/ok", http_module(tls_config={"ca_file": str(ca_file)}),
                              3.0)

    assert result.success is False
    assert result.reason == "cert_expired"
    # The chain is still measured through an unverified second handshake.
    leaf_expiry = gauge(result, "probe_tls_cert_expiry_timestamp_seconds", chain_position="0")
    assert abs(leaf_expiry - past.timestamp()) < 2
    assert result.cert_expiry == leaf_expiry
    assert gauge(result, "probe_tls_cert_verified") == 0


async def test_tcp_prober_connects(target):
    result = await probe_tcp(f"127.0.0.1:{target.port}", Module(prober="tcp"), 2.0)

    assert result.success is True
    assert "connect" in result.phases


async def test_tcp_prober_refused():
    result = await probe_tcp(f"127.0.0.1:{free_port()}", Module(prober="tcp"), 2.0)

    assert result.success is False
    assert result.reason == "connect"


async def test_tcp_prober_tls(aiohttp_server, certificate_authority, tmp_path: Path):
    server, _ = await start_tls_server(aiohttp_server, certificate_authority)
    ca_file = tmp_path / "ca.pem"
    certificate_authority.cert_pem.write_to_path(str(ca_file))
    module = Module.model_validate({"prober": "tcp", "tcp": {"tls": True, "tls_config": {"ca_file": str(ca_file),
                                                                                        "server_name": "localhost"}}})

    result = await probe_tcp(f"127.0.0.1:{server.port}", module, 2.0)

    assert result.success is True, result.log_lines
    assert "probe_ssl_earliest_cert_expiry" in result.gauges


async def test_tcp_prober_rejects_malformed_target():
    result = await probe_tcp("no-port-here", Module(prober="tcp"), 2.0)

    assert result.success is False
    assert result.reason == "invalid_target"


# --- probe log ------------------------------------------------------------------------


class CountingValue:
    """A log argument that counts how often it is formatted."""

    def __init__(self):
        self.formatted = 0

    def __str__(self) -> str:
        self.formatted += 1
        return "42"


def test_probe_log_formats_lines_on_read(caplog):
    logger = logging.getLogger("slawatch.prober.test")
    caplog.set_level(logging.INFO, logger=logger.name)
    log = ProbeLog(logger, "http://user:pw@127.0.0.1/")
    value = CountingValue()

    log.debug("Connected value=%s url=%s", value, "http://user:pw@127.0.0.1/")
    formatted_before_read = value.formatted
    lines = log.lines

    assert formatted_before_read == 0
    assert len(lines) == 1
    assert lines[0].split()[1] == "DEBUG"
    assert lines[0].endswith("Connected value=42 url=http://<secret>@127.0.0.1/")
    assert caplog.records == []


def test_probe_log_reaches_debug_log(caplog):
    logger = logging.getLogger("slawatch.prober.test")
    caplog.set_level(logging.DEBUG, logger=logger.name)
    # A percent sign in the target must not be read as a format directive.
    log = ProbeLog(logger, "http://user:pw@127.0.0.1/%41")

    log.error("Probe failed reason=%s", "timeout")

    assert [record.getMessage() for record in caplog.records] == [
        "Probe failed reason=timeout target=http://<secret>@127.0.0.1/%41"]
    assert caplog.records[0].levelno == logging.DEBUG
    assert log.lines[0].split()[1] == "ERROR"
