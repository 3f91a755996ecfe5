"""The /probe allowlist, numeric host forms, redirects and secret redaction.

A server on 127.0.0.2 is the forbidden address: Linux routes all of
127.0.0.0/8 to the loopback interface, and the server counts connections, so
a test can prove that a denied probe never connected. No test sends a packet
to a link-local or metadata address; the link-local rule is checked on the
guard alone.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from slawatch.config import parse_config
from slawatch.probers.net import literal_ip
from slawatch.web import Exporter, create_app
from slawatch.web.guard import ProbeGuard

from conftest import minimal_config, write_config

pytestmark = pytest.mark.both_loops


class CountingServer:
    """An HTTP server on 127.0.0.2 that counts accepted connections and returns 200."""

    def __init__(self):
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> "CountingServer":
        self.server = await asyncio.start_server(self._handle, "127.0.0.2", 0)
        return self

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def forbidden():
    server = await CountingServer().start()
    yield server
    await server.close()


@pytest.fixture
async def redirector(aiohttp_server, forbidden):
    """A server on the allowed 127.0.0.1 that redirects to the forbidden 127.0.0.2."""
    async def hop(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.2:{forbidden.port}/")

    app = web.Application()
    app.router.add_get("/hop", hop)
    return await aiohttp_server(app, host="127.0.0.1")


@pytest.fixture
def make_client(aiohttp_client, tmp_path: Path):
    async def build(probe: dict, modules: dict | None = None, targets: list | None = None):
        data = minimal_config(tmp_path, probe=probe)
        if modules:
            data["modules"].update(modules)
        if targets:
            data["targets"] = targets
        path = write_config(tmp_path / "slawatch.yml", data)
        exporter = Exporter(parse_config(data), str(path), registry=CollectorRegistry())
        return await aiohttp_client(create_app(exporter)), exporter

    return build


def denied_count(exporter: Exporter, reason: str) -> float:
    return exporter.registry.get_sample_value("slawatch_probe_denied_total", {"reason": reason})


LOOPBACK_ONE = {"allow": ["127.0.0.1/32"], "allow_configured_targets": False}


@pytest.mark.parametrize("host", ["127.0.0.2", "0x7f000002", "2130706434", "127.0.0.0x2", "0177.0.0.2", "127.2",
                                  "[::ffff:127.0.0.2]", "[::ffff:7f00:2]"])
async def test_numeric_forms_denied_without_connecting(make_client, forbidden, host):
    client, exporter = await make_client(LOOPBACK_ONE)

    response = await client.get("/probe", params={"target": f"http://{host}:{forbidden.port}/",
                                                  "module": "http_2xx"})
    text = await response.text()

    assert response.status == 403, text
    assert "127.0.0.2" in text
    assert "not_allowed" in text
    assert forbidden.connections == 0
    assert denied_count(exporter, "not_allowed") == 1


@pytest.mark.parametrize("host", ["0x7f000002", "2130706434", "[::ffff:127.0.0.2]"])
async def test_numeric_forms_reach_allowed_address(make_client, forbidden, host):
    # The same forms connect when the range allows them, so the denial above
    # comes from the guard and not from a form the prober cannot reach.
    client, _ = await make_client({"allow": ["127.0.0.0/8"], "allow_configured_targets": False})

    response = await client.get("/probe", params={"target": f"http://{host}:{forbidden.port}/",
                                                  "module": "http_2xx"})
    text = await response.text()

    assert response.status == 200
    assert "probe_success 1.0" in text
    assert forbidden.connections == 1


async def test_redirect_hop_denied(make_client, forbidden, redirector):
    client, exporter = await make_client(LOOPBACK_ONE)

    response = await client.get("/probe", params={"target": str(redirector.make_url("/hop")),
                                                  "module": "http_2xx"})
    text = await response.text()

    assert response.status == 403, text
    assert "127.0.0.2" in text
    assert forbidden.connections == 0
    assert denied_count(exporter, "not_allowed") == 1


async def test_tcp_numeric_form_denied(make_client, forbidden):
    client, _ = await make_client(LOOPBACK_ONE)

    response = await client.get("/probe", params={"target": f"2130706434:{forbidden.port}", "module": "tcp_connect"})

    assert response.status == 403
    assert forbidden.connections == 0


async def test_only_configured_targets(make_client, forbidden):
    configured = f"http://127.0.0.2:{forbidden.port}/"
    client, exporter = await make_client(
        {"allow": ["127.0.0.0/8"], "only_configured_targets": True},
        targets=[{"service": "api", "url": configured, "module": "http_2xx", "interval": "1h"}],
    )

    other = await client.get("/probe", params={"target": f"http://127.0.0.2:{forbidden.port}/other",
                                               "module": "http_2xx"})
    assert other.status == 403
    assert "not_configured" in await other.text()
    assert forbidden.connections == 0
    assert denied_count(exporter, "not_configured") == 1

    listed = await client.get("/probe", params={"target": configured, "module": "http_2xx"})
    assert listed.status == 200
    assert "probe_success 1.0" in await listed.text()


def test_literal_ip_forms():
    assert str(literal_ip("0x7f000002")) == "127.0.0.2"
    assert str(literal_ip("2130706434")) == "127.0.0.2"
    assert str(literal_ip("127.1")) == "127.0.0.1"
    assert str(literal_ip("[::ffff:127.0.0.2]")) == "::ffff:7f00:2"
    assert literal_ip("localhost") is None
    assert literal_ip("0x7f.example") is None
    assert literal_ip("1.2.3.4.5") is None


GUARD_CASES = [
    # (allow, host, resolved ip, denial reason or None)
    (["10.0.0.0/8"], "metadata.internal", "169.254.169.254", "link_local"),
    (["10.0.0.0/8"], "a", "::ffff:169.254.169.254", "link_local"),
    (["10.0.0.0/8", "a"], "a", "fe80::1%eth0", "link_local"),
    (["169.254.0.0/16"], "a", "169.254.169.254", None),
    (["a"], "a", "0.0.0.0", "unspecified"),
    (["a"], "a", "::", "unspecified"),
    (["127.0.0.1/32"], "0", "0.0.0.0", "unspecified"),
    (["127.0.0.1/32"], "2130706434", "127.0.0.2", "not_allowed"),
    (["127.0.0.1/32"], "x", "::ffff:127.0.0.1", None),
    (["127.0.0.1/32"], "x", "not-an-ip", "invalid_address"),
]


@pytest.mark.parametrize(("allow", "host", "ip", "reason"), GUARD_CASES)
def test_guard_reasons_without_connecting(allow, host, ip, reason):
    guard = ProbeGuard(parse_config({"probe": {"allow": allow, "allow_configured_targets": False}}))

    denial = guard(host, ip)

    assert (denial.reason if denial else None) == reason


async def test_secrets_redacted_everywhere(make_client, aiohttp_server, tmp_path: Path, caplog):
    seen_headers = []

    async def echo(request: web.Request) -> web.Response:
        seen_headers.append(request.headers.get("Authorization", ""))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", echo)
    target = await aiohttp_server(app)
    token_file = tmp_path / "token"
    token_file.write_text("file-token-0451\n")
    password_file = tmp_path / "password"
    password_file.write_text("file-password-0451\n")
    modules = {
        "basic": {"prober": "http", "timeout": "2s", "http": {"basic_auth": {"username": "u", "password": "pw-0451"}}},
        "basic_file": {"prober": "http", "timeout": "2s",
                       "http": {"basic_auth": {"username": "u", "password_file": str(password_file)}}},
        "bearer": {"prober": "http", "timeout": "2s", "http": {"bearer_token": "tok-0451"}},
        "bearer_file": {"prober": "http", "timeout": "2s", "http": {"bearer_token_file": str(token_file)}},
        "authz": {"prober": "http", "timeout": "2s",
                  "http": {"authorization": {"type": "Token", "credentials": "cred-0451"}}},
        "proxy": {"prober": "http", "timeout": "2s", "http": {"proxy_url": "http://pu:proxy-pw-0451@127.0.0.1:1"}},
    }
    client, _ = await make_client({"allow": ["127.0.0.0/8"]}, modules=modules)
    secrets = ["pw-0451", "file-password-0451", "tok-0451", "file-token-0451", "cred-0451", "proxy-pw-0451",
               "url-pw-0451"]

    caplog.set_level(logging.DEBUG)
    texts = []
    for name in ("basic", "basic_file", "bearer", "bearer_file", "authz", "proxy"):
        response = await client.get("/probe", params={"target": str(target.make_url("/")), "module": name,
                                                      "debug": "true"})
        texts.append(await response.text())
    url_target = f"http://u:url-pw-0451@127.0.0.1:{target.port}/"
    response = await client.get("/probe", params={"target": url_target, "module": "http_2xx", "debug": "true"})
    texts.append(await response.text())
    texts.append(await (await client.get("/config")).text())
    # Only slawatch's loggers: `slawatch serve` turns aiohttp's access log off,
    # while the test server's access log records the query string.
    texts.append("\n".join(record.getMessage() for record in caplog.records if record.name.startswith("slawatch")))

    assert seen_headers[:5] == ["Basic dTpwdy0wNDUx", "Basic dTpmaWxlLXBhc3N3b3JkLTA0NTE=", "Bearer tok-0451",
                                "Bearer file-token-0451", "Token cred-0451"]
    # User information in the target URL is sent as basic auth, as Go's client does.
    assert seen_headers[-1] == "Basic dTp1cmwtcHctMDQ1MQ=="
    assert "http://<secret>@127.0.0.1" in texts[-3]
    for text in texts:
        for secret in secrets:
            assert secret not in text


async def test_probe_output_has_location_and_reason(make_client, forbidden, tmp_path: Path):
    client, _ = await make_client({"allow": ["127.0.0.0/8"]})

    response = await client.get("/probe", params={"target": f"http://127.0.0.2:{forbidden.port}/",
                                                  "module": "http_2xx"})
    families = {f.name: f for f in text_string_to_metric_families(await response.text())}

    assert families["probe_location_info"].samples[0].labels == {"location": "test"}
    assert "probe_failure_info" not in families
    assert "location" not in families["probe_success"].samples[0].labels
