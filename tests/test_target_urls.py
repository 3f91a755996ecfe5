"""Targets with non-ASCII, space and control characters, unencodable hosts, long targets and redirect loops.

The blackbox comparison runs Debian's prometheus-blackbox-exporter against
the same local server and compares the values of probe_success,
probe_http_status_code and probe_http_redirects.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import aiohttp
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from slawatch.config import Module, check_target, parse_config
from slawatch.probers.http import escape_url, probe_http
from slawatch.scheduler import ProbeMetrics, Scheduler
from slawatch.web import Exporter, create_app

from conftest import free_port, minimal_config, require_binary, write_config


class LineServer:
    """Serve every request by its request line: /loop redirects to itself, /once to /ok, others 200."""

    def __init__(self):
        self.lines: list[bytes] = []
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> "LineServer":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        self.heads.append(head)
        line = head.split(b"\r\n", 1)[0]
        self.lines.append(line)
        path = line.split(b" ")[1]
        if path.startswith(b"/loop"):
            writer.write(b"HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\n\r\n")
        elif path.startswith(b"/once"):
            writer.write(b"HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: 0\r\n\r\n")
        elif path.startswith(b"/utf8-location"):
            writer.write(b"HTTP/1.1 302 Found\r\nLocation: /\xc3\xa9\r\nContent-Length: 0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def lines():
    server = await LineServer().start()
    yield server
    await server.close()


def http_module(**http) -> Module:
    return Module.model_validate({"prober": "http", "timeout": 3.0, "http": http})


@pytest.mark.parametrize(("path", "sent"), [
    ("/été", b"/%C3%A9t%C3%A9"),
    ("/?q=中", b"/?q=%E4%B8%AD"),
    ("/a b", b"/a%20b"),
    ("/a\r\nX-Injected: 1", b"/a%0D%0AX-Injected:%201"),
    ("/%C3%A9%zz?a=%2F%", b"/%C3%A9%25zz?a=%2F%25"),
    ("/keep/(a)!*;=@:,$&+~?x=[1]|{2}", b"/keep/(a)!*;=@:,$&+~?x=[1]|{2}"),
])
async def test_request_line_escapes_the_path_and_query(lines, path, sent):
    result = await probe_http(f"http://127.0.0.1:{lines.port}{path}", http_module(), 3.0)

    assert result.success is True, result.log_lines
    assert lines.lines == [b"GET " + sent + b" HTTP/1.1"]
    assert b"x-injected" not in lines.heads[0].lower().split(b"\r\n", 1)[1]


async def test_non_ascii_location_is_escaped(lines):
    result = await probe_http(f"http://127.0.0.1:{lines.port}/utf8-location", http_module(), 3.0)

    assert result.success is True, result.log_lines
    assert lines.lines[-1] == b"GET /%C3%A9 HTTP/1.1"


def test_escape_url_host_forms():
    assert escape_url("http://bücher.example:8080/x#part") == "http://xn--bcher-kva.example:8080/x"
    assert escape_url("https://[::1]:8443/é") == "https://[::1]:8443/%C3%A9"
    assert escape_url("/a b?c d") == "/a%20b?c%20d"


async def test_scheduled_non_ascii_target_succeeds(lines):
    url = f"http://127.0.0.1:{lines.port}/搜索?q=中文"
    config = parse_config({
        "modules": {"http_2xx": {"prober": "http", "timeout": "1s"}},
        "targets": [{"service": "search", "url": url, "module": "http_2xx", "interval": "2s"}],
    })
    registry = CollectorRegistry()
    scheduler = Scheduler(ProbeMetrics(registry, [0.5, 1.0]), config)

    await scheduler.start()
    try:
        for _ in range(50):
            if lines.lines:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)
    finally:
        await scheduler.stop()

    labels = {"service": "search", "module": "http_2xx", "location": "default"}
    assert lines.lines[0] == b"GET /%E6%90%9C%E7%B4%A2?q=%E4%B8%AD%E6%96%87 HTTP/1.1"
    assert registry.get_sample_value("slawatch_probes_total", labels) >= 1
    assert (registry.get_sample_value("slawatch_probe_failures_total", labels) or 0) == 0


@pytest.mark.parametrize(("target", "prober"), [
    ("http://\ufffd\ufffd/", "http"),
    ("http://a..b/", "http"),
    ("http://" + "x" * 64 + ".example/", "http"),
    ("\ufffd:80", "tcp"),
    ("\ufffd", "dns"),
    ("\ufffd:53", "dns"),
    ("\ufffd", "icmp"),
])
def test_unencodable_hosts_are_invalid_targets(target, prober):
    problem = check_target(target, prober)

    assert problem is not None
    assert repr(target) in problem
    assert "is not a valid DNS name" in problem
    assert "IP address" in problem


def test_encodable_hosts_stay_valid():
    assert check_target("http://bücher.example/", "http") is None
    assert check_target("http://[::1]:80/é?q=中", "http") is None
    assert check_target("http://127.0.0.1/a b", "http") is None
    assert check_target("example.com.", "icmp") is None


def test_space_in_http_host_is_invalid():
    problem = check_target("http://exa mple.com/", "http")

    assert problem is not None and "space or control character" in problem


@pytest.fixture
def make_client(aiohttp_client, tmp_path: Path):
    async def build():
        data = minimal_config(tmp_path, modules={
            "http_2xx": {"prober": "http", "timeout": "2s"},
            "tcp_connect": {"prober": "tcp", "timeout": "2s"},
            "dns_udp": {"prober": "dns", "timeout": "2s", "dns": {"query_name": "example.com"}},
            "icmp": {"prober": "icmp", "timeout": "2s"},
        })
        exporter = Exporter(parse_config(data), str(write_config(tmp_path / "s.yml", data)),
                            registry=CollectorRegistry())
        return await aiohttp_client(create_app(exporter))

    return build


@pytest.mark.parametrize(("query", "target"), [
    ("module=http_2xx&target=http://%ff%fe/", "http://\ufffd\ufffd/"),
    ("module=tcp_connect&target=%ff:80", "\ufffd:80"),
    ("module=dns_udp&target=%ff", "\ufffd"),
    ("module=icmp&target=%ff", "\ufffd"),
])
async def test_probe_unencodable_host_is_400(make_client, query, target):
    client = await make_client()

    response = await client.get(f"/probe?{query}")
    text = await response.text()

    assert response.status == 400, text
    assert "is not a valid DNS name" in text
    assert repr(target) in text


@pytest.mark.parametrize("path", ["/%C3%A9t%C3%A9", "/?q=%E4%B8%AD", "/a%20b", "/a%0d%0aX-Injected:%201"])
async def test_probe_escaped_targets_succeed(make_client, lines, path):
    client = await make_client()

    response = await client.get(f"/probe?module=http_2xx&target=http://127.0.0.1:{lines.port}{path}")
    text = await response.text()

    assert response.status == 200, text
    assert "probe_success 1" in text


async def test_debug_header_line_has_no_raw_line_break(make_client, lines):
    client = await make_client()

    response = await client.get(f"/probe?debug=true&target=http://127.0.0.1:{lines.port}/a%0d%0aX-Injected:%201")
    text = await response.text()

    first = text.split("\n", 1)[0]
    assert first.startswith("Logs for the probe of ")
    assert first.endswith("/a%0D%0AX-Injected: 1 with module http_2xx:")
    assert "\r" not in text


@pytest.mark.parametrize("query", ["module=", ""])
async def test_empty_or_missing_module_means_http_2xx(make_client, lines, query):
    client = await make_client()

    response = await client.get(f"/probe?{query}&target=http://127.0.0.1:{lines.port}/")
    text = await response.text()

    assert response.status == 200, text
    assert "probe_http_status_code 200" in text


async def test_unknown_module_still_rejected(make_client):
    client = await make_client()

    response = await client.get("/probe?module=nope&target=http://127.0.0.1/")

    assert response.status == 400
    assert 'Unknown module "nope"' in await response.text()


async def test_long_target_accepted_and_over_limit_rejected(make_client, lines):
    client = await make_client()

    long_path = "/" + "a" * 9000
    response = await client.get(f"/probe?target=http://127.0.0.1:{lines.port}{long_path}")
    assert response.status == 200, (await response.text())[:200]
    assert lines.lines[-1] == f"GET {long_path} HTTP/1.1".encode()

    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET /probe?target=http://127.0.0.1/" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    status = int(reply.split(b" ", 2)[1])
    assert 400 <= status < 500, reply[:200]


def values(text: str) -> dict[str, float]:
    wanted = {"probe_success", "probe_http_status_code", "probe_http_redirects"}
    return {family.name: family.samples[0].value for family in text_string_to_metric_families(text)
            if family.name in wanted}


async def test_status_and_redirects_match_blackbox(aiohttp_client, lines, tmp_path: Path, stop_processes):
    binary = require_binary("prometheus-blackbox-exporter", "blackbox_exporter")
    module_config = {
        "http_2xx": {"prober": "http", "timeout": "3s"},
        "http_no_redirect": {"prober": "http", "timeout": "3s", "http": {"follow_redirects": False}},
    }
    modules_file = tmp_path / "blackbox.yml"
    modules_file.write_text(yaml.safe_dump({"modules": module_config}))
    port = free_port()
    process = subprocess.Popen([binary, f"--config.file={modules_file}", f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stop_processes.append(process)
    data = minimal_config(tmp_path, modules=module_config)
    exporter = Exporter(parse_config(data), str(write_config(tmp_path / "s.yml", data)), registry=CollectorRegistry())
    slawatch = await aiohttp_client(create_app(exporter))

    base = f"http://127.0.0.1:{lines.port}"
    cases = [("http_2xx", f"{base}/loop"), ("http_2xx", f"{base}/once"), ("http_no_redirect", f"{base}/once"),
             ("http_2xx", f"{base}/été"), ("http_2xx", f"{base}/a b"), ("http_2xx", f"{base}/?q=中")]
    differences = []
    seen = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for _ in range(100):
            try:
                async with session.get(f"http://127.0.0.1:{port}/-/healthy") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            assert process.poll() is None, process.stderr.read().decode()
            await asyncio.sleep(0.2)

        for module, target in cases:
            params = {"module": module, "target": target}
            lines.lines.clear()
            async with session.get(f"http://127.0.0.1:{port}/probe", params=params) as response:
                theirs = values(await response.text())
            blackbox_paths = [line.split(b" ")[1] for line in lines.lines]
            lines.lines.clear()
            response = await slawatch.get("/probe", params=params)
            ours = values(await response.text())
            our_paths = [line.split(b" ")[1] for line in lines.lines]
            seen[(module, target)] = (ours, theirs, len(our_paths), len(blackbox_paths))
            if ours != theirs:
                differences.append(f"{module} {target}: slawatch {ours}, blackbox {theirs}")
            # Go sends the query's bytes unescaped; slawatch percent-encodes them, so only paths are compared.
            if [p.split(b"?")[0] for p in our_paths] != [p.split(b"?")[0] for p in blackbox_paths]:
                differences.append(f"{module} {target}: slawatch sent {our_paths}, blackbox {blackbox_paths}")

    loop = {"probe_success": 0, "probe_http_status_code": 302, "probe_http_redirects": 11}
    assert seen[("http_2xx", f"{base}/loop")] == (loop, loop, 11, 11)
    declined = {"probe_success": 0, "probe_http_status_code": 302, "probe_http_redirects": 1}
    assert seen[("http_no_redirect", f"{base}/once")] == (declined, declined, 1, 1)
    assert differences == [], "\n".join(differences)
