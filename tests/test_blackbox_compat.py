"""slawatch's /probe against Debian's prometheus-blackbox-exporter, same modules, same targets.

Both exporters load one modules file and probe the same local servers. For
each case the test compares the success verdict and, per metric family, the
type and the label names. Label values and sample values are not compared
(durations differ by nature). The differences below are deliberate:

- SLAWATCH_ONLY: slawatch's additions (failure reason, location, transfer
  speed, per-certificate expiry, cipher, verification result).
- probe_http_duration_seconds: blackbox exports all five phases, with 0 for
  phases that did not run (tls on plain HTTP); slawatch exports only the
  phases that ran. The family and its `phase` label are the same.
- BLACKBOX_ONLY: families blackbox 0.23 has and slawatch does not.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

import aiohttp
import pytest
import trustme
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from slawatch.config import ConfigError, parse_config
from slawatch.web import Exporter, create_app

from conftest import free_port, icmp_allowed, minimal_config, require_binary, write_config

SLAWATCH_ONLY = {"probe_location_info", "probe_failure_info", "probe_http_transfer_bytes_per_second",
                 "probe_tls_cert_expiry_timestamp_seconds", "probe_tls_cert_verified", "probe_tls_cipher_info"}
# blackbox 0.23 describes the certificate chain with free-text labels
# (subject, issuer, SANs, fingerprint); slawatch keeps labels bounded.
BLACKBOX_ONLY = {"probe_ssl_last_chain_info"}


def modules(ca_file: str) -> dict:
    tls = {"ca_file": ca_file}
    return {
        "http_2xx": {"prober": "http", "timeout": "3s", "http": {"preferred_ip_protocol": "ip4"}},
        "http_post": {"prober": "http", "timeout": "3s", "http": {"method": "POST", "body": "ping"}},
        "http_404": {"prober": "http", "timeout": "3s", "http": {"valid_status_codes": [404]}},
        "http_no_redirect": {"prober": "http", "timeout": "3s", "http": {"follow_redirects": False}},
        "http_body": {"prober": "http", "timeout": "3s",
                      "http": {"fail_if_body_not_matches_regexp": ["healthy"]}},
        "http_header": {"prober": "http", "timeout": "3s",
                        "http": {"fail_if_header_matches": [{"header": "X-Mode", "regexp": "maint"}]}},
        "http_ssl": {"prober": "http", "timeout": "3s", "http": {"fail_if_not_ssl": True, "tls_config": tls}},
        "http_basic": {"prober": "http", "timeout": "3s",
                       "http": {"basic_auth": {"username": "u", "password": "p"}}},
        "tcp_connect": {"prober": "tcp", "timeout": "3s"},
        "tcp_banner": {"prober": "tcp", "timeout": "3s", "tcp": {"query_response": [{"expect": "^HELLO"}]}},
        "tcp_tls": {"prober": "tcp", "timeout": "3s", "tcp": {"tls": True, "tls_config": tls}},
        "icmp": {"prober": "icmp", "timeout": "3s", "icmp": {"preferred_ip_protocol": "ip4"}},
    }


def cases(http: int, https: int, banner: int, closed: int) -> list[tuple[str, str]]:
    return [
        ("http_2xx", f"http://127.0.0.1:{http}/ok"),
        ("http_2xx", f"http://127.0.0.1:{http}/missing"),
        ("http_2xx", f"http://127.0.0.1:{http}/redirect"),
        ("http_2xx", f"http://127.0.0.1:{closed}/"),
        ("http_post", f"http://127.0.0.1:{http}/ok"),
        ("http_404", f"http://127.0.0.1:{http}/missing"),
        ("http_no_redirect", f"http://127.0.0.1:{http}/redirect"),
        ("http_body", f"http://127.0.0.1:{http}/ok"),
        ("http_body", f"http://127.0.0.1:{http}/maint"),
        ("http_header", f"http://127.0.0.1:{http}/maint"),
        ("http_ssl", f"https://127.0.0.1:{https}/ok"),
        ("http_ssl", f"http://127.0.0.1:{http}/ok"),
        ("http_2xx", f"https://127.0.0.1:{https}/ok"),
        ("http_basic", f"http://127.0.0.1:{http}/auth"),
        ("tcp_connect", f"127.0.0.1:{http}"),
        ("tcp_connect", f"127.0.0.1:{closed}"),
        ("tcp_banner", f"127.0.0.1:{banner}"),
        ("tcp_banner", f"127.0.0.1:{http}"),
        ("tcp_tls", f"127.0.0.1:{https}"),
    ] + ICMP_CASES


# Both exporters need datagram ICMP sockets or CAP_NET_RAW for the icmp module.
ICMP_CASES = [("icmp", "127.0.0.1")] if icmp_allowed(socket.AF_INET) else []


def target_app() -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="healthy")

    async def maint(request: web.Request) -> web.Response:
        return web.Response(text="down for maintenance", headers={"X-Mode": "maintenance"})

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ok")

    async def auth(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Basic dTpw":
            raise web.HTTPUnauthorized()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/ok", ok)
    app.router.add_get("/maint", maint)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/auth", auth)
    return app


def shape(text: str) -> tuple[dict[str, tuple[str, frozenset]], float]:
    """Return {family: (type, label names)} and probe_success from an exposition."""
    families = {}
    success = -1.0
    for family in text_string_to_metric_families(text):
        labels = frozenset(name for sample in family.samples for name in sample.labels)
        families[family.name] = (family.type, labels)
        if family.name == "probe_success":
            success = family.samples[0].value
    return families, success


async def banner_server() -> asyncio.Server:
    async def handle(reader, writer):
        writer.write(b"HELLO slawatch\r\n")
        await writer.drain()
        try:
            await asyncio.wait_for(reader.read(1024), 5)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_same_metrics_and_verdicts_as_blackbox(aiohttp_server, aiohttp_client, tmp_path: Path,
                                                     stop_processes):
    binary = require_binary("prometheus-blackbox-exporter", "blackbox_exporter")
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_context = __import__("ssl").create_default_context(__import__("ssl").Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    http = await aiohttp_server(target_app())
    https = await aiohttp_server(target_app(), ssl=server_context)
    banner = await banner_server()
    banner_port = banner.sockets[0].getsockname()[1]

    module_config = modules(str(ca_file))
    modules_file = tmp_path / "blackbox.yml"
    modules_file.write_text(yaml.safe_dump({"modules": module_config}))
    port = free_port()
    process = subprocess.Popen([binary, f"--config.file={modules_file}", f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stop_processes.append(process)

    data = minimal_config(tmp_path, modules=yaml.safe_load(modules_file.read_text())["modules"])
    exporter = Exporter(parse_config(data), str(write_config(tmp_path / "s.yml", data)), registry=CollectorRegistry())
    slawatch = await aiohttp_client(create_app(exporter))

    differences = []
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

        for module, target in cases(http.port, https.port, banner_port, free_port()):
            params = {"module": module, "target": target}
            async with session.get(f"http://127.0.0.1:{port}/probe", params=params) as response:
                blackbox_families, blackbox_success = shape(await response.text())
            response = await slawatch.get("/probe", params=params)
            ours, our_success = shape(await response.text())

            case = f"{module} {target}"
            if our_success != blackbox_success:
                differences.append(f"{case}: probe_success {our_success} != blackbox {blackbox_success}")
            for name in sorted(set(blackbox_families) - set(ours) - BLACKBOX_ONLY):
                differences.append(f"{case}: missing {name}")
            for name in sorted(set(ours) - set(blackbox_families) - SLAWATCH_ONLY):
                differences.append(f"{case}: extra {name}")
            for name in sorted(set(ours) & set(blackbox_families)):
                if ours[name] != blackbox_families[name]:
                    differences.append(f"{case}: {name} is {ours[name]} in slawatch, "
                                       f"{blackbox_families[name]} in blackbox")
    banner.close()

    assert differences == [], "\n".join(differences)


# Options that blackbox 0.23 accepts and slawatch must accept too, and options
# that both reject. Each module is checked alone with `--config.check`.
ACCEPTED_BY_BOTH = {
    "no_follow_redirects": {"prober": "http", "http": {"no_follow_redirects": True}},
    "no_follow_agreeing": {"prober": "http", "http": {"no_follow_redirects": True, "follow_redirects": False}},
    "http_max_version": {"prober": "http", "http": {"tls_config": {"max_version": "TLS12"}}},
    "tcp_version_range": {"prober": "tcp", "tcp": {"tls_config": {"min_version": "TLS12", "max_version": "TLS13"}}},
}
REJECTED_BY_BOTH = {
    "follow_redirects_hosts": {"prober": "http", "http": {"follow_redirects_hosts": ["example.com"]}},
    "max_version_unknown": {"prober": "http", "http": {"tls_config": {"max_version": "TLS14"}}},
}


def blackbox_config_check(binary: str, path: Path, module: dict) -> subprocess.CompletedProcess:
    path.write_text(yaml.safe_dump({"modules": {"m": module}}), encoding="utf-8")
    return subprocess.run([binary, "--config.check", f"--config.file={path}"], capture_output=True, text=True,
                          timeout=30)


@pytest.mark.parametrize("name", sorted(ACCEPTED_BY_BOTH))
def test_option_accepted_like_blackbox(tmp_path: Path, name: str):
    binary = require_binary("prometheus-blackbox-exporter", "blackbox_exporter")
    module = ACCEPTED_BY_BOTH[name]

    checked = blackbox_config_check(binary, tmp_path / "blackbox.yml", module)

    assert checked.returncode == 0, checked.stderr
    assert parse_config({"modules": {"m": module}}).modules["m"].prober == module["prober"]


@pytest.mark.parametrize("name", sorted(REJECTED_BY_BOTH))
def test_option_rejected_like_blackbox(tmp_path: Path, name: str):
    binary = require_binary("prometheus-blackbox-exporter", "blackbox_exporter")
    module = REJECTED_BY_BOTH[name]

    checked = blackbox_config_check(binary, tmp_path / "blackbox.yml", module)

    assert checked.returncode != 0, checked.stderr
    with pytest.raises(ConfigError):
        parse_config({"modules": {"m": module}})
