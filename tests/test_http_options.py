"""blackbox_exporter's http and tcp options against real local servers."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry

from slawatch.config import ConfigError, Module, parse_config
from slawatch.probers import probe_http, probe_tcp
from slawatch.scheduler import ProbeMetrics
from slawatch.web import Exporter, create_app

from conftest import minimal_config, write_config

pytestmark = pytest.mark.both_loops


def http_module(**options) -> Module:
    return Module.model_validate({"prober": "http", "timeout": "3s", "http": options})


def gauge(result, name: str, **labels) -> float:
    return result.gauges[name].samples[tuple(sorted(labels.items()))]


BODY = b"status: healthy\n" * 64
SEEN = web.AppKey("seen", list)


async def plain(request: web.Request) -> web.Response:
    return web.Response(body=BODY, headers={"X-Version": "2.1", "X-Multi": "a"})


async def compressed(request: web.Request) -> web.Response:
    encoding = request.headers.get("Accept-Encoding", "")
    if encoding == "gzip":
        return web.Response(body=gzip.compress(BODY), headers={"Content-Encoding": "gzip"})
    if encoding == "deflate":
        return web.Response(body=zlib.compress(BODY), headers={"Content-Encoding": "deflate"})
    return web.Response(body=BODY)


async def echo_host(request: web.Request) -> web.Response:
    return web.Response(text=request.headers.get("Host", ""))


async def redirect_elsewhere(request: web.Request) -> web.Response:
    raise web.HTTPFound(request.query["to"])


async def record(request: web.Request) -> web.Response:
    request.app[SEEN].append((request.method, await request.read(), request.headers.get("Authorization")))
    return web.Response(text="ok")


@pytest.fixture
async def target(aiohttp_server):
    app = web.Application()
    app[SEEN] = []
    app.router.add_get("/plain", plain)
    app.router.add_get("/compressed", compressed)
    app.router.add_get("/host", echo_host)
    app.router.add_route("*", "/go", redirect_elsewhere)
    app.router.add_route("*", "/record", record)
    return await aiohttp_server(app)


CASES = [
    # (path, options, success, reason)
    ("/plain", {"fail_if_body_not_matches_regexp": ["status: healthy"]}, True, ""),
    ("/plain", {"fail_if_body_not_matches_regexp": ["status: degraded"]}, False, "body_match"),
    ("/plain", {"fail_if_body_matches_regexp": ["healthy"]}, False, "body_match"),
    ("/plain", {"fail_if_header_matches": [{"header": "X-Version", "regexp": "^2\\."}]}, False, "header_match"),
    ("/plain", {"fail_if_header_not_matches": [{"header": "X-Version", "regexp": "^2\\."}]}, True, ""),
    ("/plain", {"fail_if_header_not_matches": [{"header": "X-Missing", "regexp": "."}]}, False, "header_match"),
    ("/plain", {"fail_if_header_not_matches": [{"header": "X-Missing", "regexp": ".", "allow_missing": True}]},
     True, ""),
    ("/plain", {"body_size_limit": 100}, False, "body_too_large"),
    ("/plain", {"body_size_limit": "1KB"}, True, ""),
    ("/plain", {"expected_body_size": len(BODY)}, True, ""),
    ("/plain", {"expected_body_size": 10}, False, "body_size"),
    ("/plain", {"fail_if_ssl": True}, True, ""),
    ("/compressed", {"compression": "gzip", "fail_if_body_not_matches_regexp": ["healthy"]}, True, ""),
    ("/compressed", {"compression": "deflate", "fail_if_body_not_matches_regexp": ["healthy"]}, True, ""),
    ("/compressed", {"compression": "gzip", "body_size_limit": 100}, False, "body_too_large"),
    # blackbox_exporter 0.23's deprecated no_follow_redirects inverts follow_redirects.
    ("/go?to=/plain", {"no_follow_redirects": True, "valid_status_codes": [302]}, True, ""),
    ("/go?to=/plain", {"no_follow_redirects": True}, False, "http_status"),
    ("/go?to=/plain", {"no_follow_redirects": False, "valid_status_codes": [302]}, False, "http_status"),
    ("/go?to=/plain", {"no_follow_redirects": True, "follow_redirects": False, "valid_status_codes": [302]},
     True, ""),
]


@pytest.mark.parametrize(("path", "options", "success", "reason"), CASES)
async def test_http_option_cases(target, path, options, success, reason):
    result = await probe_http(str(target.make_url(path)), http_module(**options), 3.0)

    assert result.success is success, result.log_lines
    assert result.reason == reason


async def test_regex_failure_sets_blackbox_gauge(target):
    result = await probe_http(str(target.make_url("/plain")),
                              http_module(fail_if_body_matches_regexp=["healthy"]), 3.0)

    assert gauge(result, "probe_failed_due_to_regex") == 1


async def test_compression_reports_uncompressed_length(target):
    result = await probe_http(str(target.make_url("/compressed")), http_module(compression="gzip"), 3.0)

    assert gauge(result, "probe_http_uncompressed_body_length") == len(BODY)
    assert gauge(result, "probe_http_content_length") == len(gzip.compress(BODY))


async def test_transfer_speed_is_bytes_over_transfer_phase(target):
    result = await probe_http(str(target.make_url("/plain")), http_module(), 3.0)

    speed = gauge(result, "probe_http_transfer_bytes_per_second")
    assert speed > 0
    assert speed == pytest.approx(len(BODY) / result.phases["transfer"])


async def test_body_file_and_method(target, tmp_path: Path):
    body_file = tmp_path / "body.json"
    body_file.write_bytes(b'{"ping": 1}')

    result = await probe_http(str(target.make_url("/record")),
                              http_module(method="PUT", body_file=str(body_file)), 3.0)

    assert result.success, result.log_lines
    assert target.app[SEEN] == [("PUT", b'{"ping": 1}', None)]


async def test_post_redirect_becomes_get(target):
    destination = str(target.make_url("/record"))
    result = await probe_http(str(target.make_url("/go").with_query(to=destination)),
                              http_module(method="POST", body="x"), 3.0)

    assert result.success, result.log_lines
    assert target.app[SEEN] == [("GET", b"", None)]


async def test_credentials_dropped_on_cross_host_redirect(target):
    # 127.0.0.1 and localhost are different hosts to the prober, as to Go's client.
    destination = f"http://localhost:{target.port}/record"
    result = await probe_http(str(target.make_url("/go").with_query(to=destination)),
                              http_module(bearer_token="cross-host-token"), 3.0)

    assert result.success, result.log_lines
    assert target.app[SEEN] == [("GET", b"", None)]


async def test_same_host_redirect_keeps_credentials(target):
    destination = str(target.make_url("/record"))
    await probe_http(str(target.make_url("/go").with_query(to=destination)), http_module(bearer_token="t1"), 3.0)

    assert target.app[SEEN] == [("GET", b"", "Bearer t1")]


async def test_hostname_parameter_sets_host(aiohttp_client, target, tmp_path: Path):
    data = minimal_config(tmp_path)
    exporter = Exporter(parse_config(data), str(write_config(tmp_path / "s.yml", data)), registry=CollectorRegistry())
    client = await aiohttp_client(create_app(exporter))

    response = await client.get("/probe", params={"target": str(target.make_url("/host")), "module": "http_2xx",
                                                  "hostname": "www.example.test", "debug": "true"})
    text = await response.text()

    assert "probe_success 1.0" in text
    # The echoed Host header is the body: 16 bytes for www.example.test.
    assert "probe_http_uncompressed_body_length 16.0" in text
    assert '"server_name": "www.example.test"' in text


async def test_location_label_option(aiohttp_client, target, tmp_path: Path):
    data = minimal_config(tmp_path)
    data["global"]["probe_location_label"] = True
    exporter = Exporter(parse_config(data), str(write_config(tmp_path / "s.yml", data)), registry=CollectorRegistry())
    client = await aiohttp_client(create_app(exporter))

    text = await (await client.get("/probe", params={"target": str(target.make_url("/plain")),
                                                     "module": "http_2xx"})).text()

    assert 'probe_success{location="test"} 1.0' in text
    assert 'probe_http_duration_seconds{location="test",phase="connect"}' in text
    assert 'probe_location_info{location="test"} 1.0' in text


# --- proxies -------------------------------------------------------------------


async def forward_proxy(seen: list[bytes]):
    """A proxy on 127.0.0.1 that records request heads and tunnels CONNECT or forwards absolute-form requests."""
    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(reader, writer):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        seen.append(head)
        method, target_, _ = head.split(b"\r\n", 1)[0].split(b" ")
        if method == b"CONNECT":
            host, port = target_.decode().rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
        else:
            rest = target_.decode().split("://", 1)[1]
            authority, _, path = rest.partition("/")
            host, port = authority.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            up_writer.write(head.replace(target_, b"/" + path.encode(), 1))
        await asyncio.wait_for(asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer)), 10)

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_proxy_plain_http(target):
    seen: list[bytes] = []
    proxy = await forward_proxy(seen)
    port = proxy.sockets[0].getsockname()[1]
    try:
        result = await probe_http(str(target.make_url("/plain")),
                                  http_module(proxy_url=f"http://user:pw@127.0.0.1:{port}"), 3.0)
    finally:
        proxy.close()

    assert result.success, result.log_lines
    assert seen[0].startswith(f"GET http://127.0.0.1:{target.port}/plain HTTP/1.1".encode())
    assert b"proxy-authorization: Basic dXNlcjpwdw==" in seen[0]


# --- tcp query_response ----------------------------------------------------------


async def line_server(handler):
    return await asyncio.start_server(handler, "127.0.0.1", 0)


async def irc_like(reader, writer):
    writer.write(b"NOTICE hello\r\nPING :abc123\r\n")
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 5)
    writer.write(b":server 001 welcome\r\n" if line == b"PONG abc123\n" else b"ERROR bad pong\r\n")
    await writer.drain()
    writer.close()


TCP_CASES = [
    ([{"expect": "^NOTICE"}], True, ""),
    ([{"expect": "PING :([^ ]+)", "send": "PONG ${1}"}, {"expect": "^:[^ ]+ 001"}], True, ""),
    ([{"expect": "PING :([^ ]+)", "send": "PONG wrong"}, {"expect": "^:[^ ]+ 001"}], False, "expect"),
    # The server waits for a line that never comes, so the probe times out.
    ([{"expect": "^SSH-2.0-"}], False, "timeout"),
    ([{"expect": "PING :([^ ]+)", "send": "PONG ${1}"}, {"expect": "^never"}], False, "expect"),
]


@pytest.mark.parametrize(("steps", "success", "reason"), TCP_CASES)
async def test_tcp_query_response(steps, success, reason):
    server = await line_server(irc_like)
    port = server.sockets[0].getsockname()[1]
    module = Module.model_validate({"prober": "tcp", "timeout": "1s", "tcp": {"query_response": steps}})
    try:
        result = await probe_tcp(f"127.0.0.1:{port}", module, 1.0)
    finally:
        server.close()

    assert result.success is success, result.log_lines
    assert result.reason == reason


# --- config compatibility -----------------------------------------------------------


def test_debian_blackbox_example_modules_load():
    """Every module of Debian's example blackbox.yml loads unchanged."""
    path = Path("/etc/prometheus/blackbox.yml")
    if not path.exists():
        pytest.skip("Debian's prometheus-blackbox-exporter example config is not installed")
    modules = yaml.safe_load(path.read_text())["modules"]

    config = parse_config({"modules": modules})

    assert set(config.modules) == set(modules)
    assert config.modules["irc_banner"].tcp.query_response[2].send == "PONG ${1}"
    assert config.modules["pop3s_banner"].tcp.query_response[0].expect == "^OK"
    assert config.modules["grpc_plain"].grpc.service == "service1"
    assert config.modules["icmp_ttl5"].icmp.ttl == 5


def test_scheduler_counts_failure_reasons():
    registry = CollectorRegistry()
    metrics = ProbeMetrics(registry, [0.1, 1.0])
    labels = ("api", "http_2xx", "eu")
    from slawatch.probers import ProbeResult

    metrics.observe(labels, ProbeResult(success=False, reason="timeout", duration=1))
    metrics.observe(labels, ProbeResult(success=False, reason="timeout", duration=1))
    metrics.observe(labels, ProbeResult(success=False, reason="dns", duration=1))
    metrics.observe(labels, ProbeResult(success=True, duration=0.1, transfer_rate=5e6))
    base = {"service": "api", "module": "http_2xx", "location": "eu"}

    assert registry.get_sample_value("slawatch_probe_failure_reasons_total", {**base, "reason": "timeout"}) == 2
    assert registry.get_sample_value("slawatch_probe_failure_reasons_total", {**base, "reason": "dns"}) == 1
    assert registry.get_sample_value("slawatch_probe_failures_total", base) == 3
    assert registry.get_sample_value("slawatch_probe_transfer_bytes_per_second_count", base) == 1
    assert registry.get_sample_value("slawatch_probe_transfer_bytes_per_second_bucket", {**base, "le": "1e+07"}) == 1

    metrics.remove_target(labels)
    assert registry.get_sample_value("slawatch_probe_failure_reasons_total", {**base, "reason": "dns"}) is None


def test_probe_output_escapes_label_values():
    from prometheus_client.parser import text_string_to_metric_families

    from slawatch.probers import ProbeResult
    from slawatch.web.probe_output import render_probe_result

    result = ProbeResult(success=True, duration=0.25)
    result.set("probe_tls_cipher_info", "help with \\ backslash", 1, cipher='odd "name"\\\n')

    families = {f.name: f for f in text_string_to_metric_families(render_probe_result(result, "eu-1", "eu-1"))}

    assert families["probe_tls_cipher_info"].samples[0].labels == {"cipher": 'odd "name"\\\n', "location": "eu-1"}
    assert families["probe_success"].samples[0].value == 1
    assert families["probe_duration_seconds"].samples[0].value == 0.25
    assert families["probe_location_info"].samples[0].labels == {"location": "eu-1"}



@pytest.mark.parametrize("location_label", [None, "eu-1"])
def test_probe_output_matches_prometheus_client(location_label):
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.exposition import generate_latest

    from slawatch.probers import ProbeResult
    from slawatch.web.probe_output import render_probe_result

    result = ProbeResult(success=False, duration=0.25, reason="http_status")
    result.set("probe_http_status_code", "Response HTTP status code", 503)
    result.set("probe_http_duration_seconds", "Duration of http request by phase", 0.001, phase="connect")
    result.set("probe_http_duration_seconds", "Duration of http request by phase", 1234567.5, phase="transfer")
    result.set("probe_tls_cipher_info", "help with \\ backslash\nand newline", 1, cipher='odd "name"\\\n')
    result.set("probe_ip_addr_hash", "Specifies the hash of IP address", float("nan"))

    class Families:
        def collect(self):
            families = [(gauge.name, gauge.help, gauge.samples) for gauge in result.gauges.values()]
            families += [
                ("probe_duration_seconds", "Returns how long the probe took to complete in seconds",
                 {(): result.duration}),
                ("probe_success", "Displays whether or not the probe was a success", {(): 0}),
            ]
            for name, help_text, samples in families:
                yield self.family(name, help_text, samples, location_label)
            yield self.family("probe_location_info", "The location label of the exporter that ran the probe",
                              {(("location", "eu-1"),): 1}, None)
            yield self.family("probe_failure_info", "Why the probe failed, as a bounded reason",
                              {(("reason", "http_status"),): 1}, location_label)

        @staticmethod
        def family(name, help_text, samples, location):
            rows = []
            for labels, value in samples.items():
                pairs = dict(labels)
                if location is not None:
                    pairs.setdefault("location", location)
                rows.append((dict(sorted(pairs.items())), value))
            keys = sorted({key for pairs, _ in rows for key in pairs})
            family = GaugeMetricFamily(name, help_text, labels=keys)
            for pairs, value in rows:
                family.add_metric([pairs[key] for key in keys], value)
            return family

    registry = CollectorRegistry()
    registry.register(Families())

    expected = generate_latest(registry).decode()
    rendered = render_probe_result(result, "eu-1", location_label)

    assert rendered == expected

# --- TLS: client certificates, min_version, STARTTLS and CONNECT --------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    import trustme

    ca = trustme.CA()
    directory = tmp_path_factory.mktemp("tls")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    client = ca.issue_cert("probe-client")
    client.cert_chain_pems[0].write_to_path(str(directory / "client.pem"))
    client.private_key_pem.write_to_path(str(directory / "client.key"))
    return ca, directory


def server_context(ca, require_client_cert: bool = False, max_version=None):
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)
    if max_version is not None:
        context.maximum_version = max_version
    return context


async def test_client_certificate(aiohttp_server, tls_files):
    ca, directory = tls_files
    server = await aiohttp_server(web.Application(), ssl=server_context(ca, require_client_cert=True))
    tls = {"ca_file": str(directory / "ca.pem")}
    with_cert = {**tls, "cert_file": str(directory / "client.pem"), "key_file": str(directory / "client.key")}

    without = await probe_http(f"https://127.0.0.1:{server.port}/", http_module(tls_config=tls,
                                                                                 valid_status_codes=[404]), 3.0)
    presented = await probe_http(f"https://127.0.0.1:{server.port}/", http_module(tls_config=with_cert,
                                                                                   valid_status_codes=[404]), 3.0)

    assert without.success is False
    assert presented.success is True, presented.log_lines


async def test_min_version_rejects_older_server(aiohttp_server, tls_files):
    import ssl

    ca, directory = tls_files
    server = await aiohttp_server(web.Application(), ssl=server_context(ca, max_version=ssl.TLSVersion.TLSv1_2))
    module = http_module(tls_config={"ca_file": str(directory / "ca.pem"), "min_version": "TLS13"})

    result = await probe_http(f"https://127.0.0.1:{server.port}/", module, 3.0)

    assert result.success is False
    assert result.reason == "tls"


async def test_max_version_caps_handshake(aiohttp_server, tls_files):
    ca, directory = tls_files
    server = await aiohttp_server(web.Application(), ssl=server_context(ca))
    url = f"https://127.0.0.1:{server.port}/"
    tls = {"ca_file": str(directory / "ca.pem")}

    capped = await probe_http(url, http_module(tls_config={**tls, "max_version": "TLS12"},
                                               valid_status_codes=[404]), 3.0)
    uncapped = await probe_http(url, http_module(tls_config=tls, valid_status_codes=[404]), 3.0)

    assert capped.success is True, capped.log_lines
    assert gauge(capped, "probe_tls_version_info", version="TLS 1.2") == 1
    assert gauge(uncapped, "probe_tls_version_info", version="TLS 1.3") == 1


async def test_max_version_below_server_minimum(aiohttp_server, tls_files):
    import ssl

    ca, directory = tls_files
    context = server_context(ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    server = await aiohttp_server(web.Application(), ssl=context)
    module = http_module(tls_config={"ca_file": str(directory / "ca.pem"), "max_version": "TLS12"})

    result = await probe_http(f"https://127.0.0.1:{server.port}/", module, 3.0)

    assert result.success is False
    assert result.reason == "tls"


async def test_tcp_starttls(tls_files):
    ca, directory = tls_files
    context = server_context(ca)

    async def smtp_like(reader, writer):
        writer.write(b"220 ready\r\n")
        await writer.drain()
        if await asyncio.wait_for(reader.readline(), 5) != b"STARTTLS\n":
            writer.close()
            return
        writer.write(b"220 go ahead\r\n")
        await writer.drain()
        await writer.start_tls(context)
        writer.write(b"250 secure\r\n")
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    server = await asyncio.start_server(smtp_like, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    module = Module.model_validate({"prober": "tcp", "timeout": "3s", "tcp": {
        "tls_config": {"ca_file": str(directory / "ca.pem")},
        "query_response": [{"expect": "^220 ready"}, {"send": "STARTTLS"}, {"expect": "^220 go"},
                           {"starttls": True}, {"expect": "^250 secure"}]}})
    try:
        result = await probe_tcp(f"127.0.0.1:{port}", module, 3.0)
    finally:
        server.close()

    assert result.success is True, result.log_lines
    assert gauge(result, "probe_tls_cert_verified") == 1
    assert "tls" in result.phases


async def test_proxy_connect_for_https(aiohttp_server, tls_files):
    ca, directory = tls_files
    target = await aiohttp_server(web.Application(), ssl=server_context(ca))
    seen: list[bytes] = []
    proxy = await forward_proxy(seen)
    port = proxy.sockets[0].getsockname()[1]
    module = http_module(proxy_url=f"http://127.0.0.1:{port}", valid_status_codes=[404],
                         tls_config={"ca_file": str(directory / "ca.pem")})
    try:
        result = await probe_http(f"https://127.0.0.1:{target.port}/", module, 3.0)
    finally:
        proxy.close()

    assert result.success is True, result.log_lines
    assert seen[0].startswith(f"CONNECT 127.0.0.1:{target.port} HTTP/1.1".encode())
    assert gauge(result, "probe_http_ssl") == 1


@pytest.mark.parametrize(("fallback", "success", "reason"), [(True, True, ""), (False, False, "dns")])
async def test_ip_protocol_fallback(target, fallback, success, reason):
    import socket

    families = {info[0] for info in socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)}
    if socket.AF_INET6 in families or socket.AF_INET not in families:
        pytest.skip("this case needs localhost to resolve to IPv4 only (/etc/hosts)")
    module = http_module(preferred_ip_protocol="ip6", ip_protocol_fallback=fallback)

    result = await probe_http(f"http://localhost:{target.port}/plain", module, 3.0)

    assert result.success is success, result.log_lines
    assert result.reason == reason
    if success:
        assert gauge(result, "probe_ip_protocol") == 4
