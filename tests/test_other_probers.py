"""The dns, icmp and grpc probers against servers started by the tests on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from slawatch.config import ConfigError, Module, parse_config
from slawatch.probers import probe_dns, probe_grpc, probe_icmp
from slawatch.probers import icmp as icmp_module

from conftest import REPO, icmp_allowed

pytestmark = pytest.mark.both_loops


class DNSServer:
    """An authoritative server for the zone test. on 127.0.0.1, over UDP and TCP, that counts queries.

    svc.test. A returns 127.0.0.9, and late.test. the same after `late_seconds`.
    Any other name gets NXDOMAIN with the zone's SOA in the authority section.
    """

    def __init__(self, late_seconds: float = 3.0):
        self.late_seconds = late_seconds
        self.queries = 0
        self.udp_transport = None
        self.tcp_server = None
        self.port = 0

    def answer(self, wire: bytes) -> bytes:
        self.queries += 1
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        name = query.question[0].name.to_text()
        if name in ("svc.test.", "late.test."):
            response.answer.append(dns.rrset.from_text(name, 300, "IN", "A", "127.0.0.9"))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(dns.rrset.from_text("test.", 60, "IN", "SOA",
                                                      "ns.test. admin.test. 2024010101 3600 600 86400 60"))
        return response.to_wire()

    async def start(self) -> "DNSServer":
        loop = asyncio.get_running_loop()
        server = self

        class Protocol(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                delay = server.late_seconds if b"\x04late" in data else 0
                loop.call_later(delay, self.transport.sendto, server.answer(data), addr)

        # The UDP port the kernel picks may be in use for TCP, for example by an
        # outgoing connection of another process, so a few ports are tried.
        for _ in range(20):
            self.udp_transport, _ = await loop.create_datagram_endpoint(Protocol, local_addr=("127.0.0.1", 0))
            self.port = self.udp_transport.get_extra_info("sockname")[1]
            try:
                self.tcp_server = await asyncio.start_server(self._tcp, "127.0.0.1", self.port)
                return self
            except OSError:
                self.udp_transport.close()
        raise AssertionError("no port on 127.0.0.1 was free for both UDP and TCP after 20 tries")

    async def _tcp(self, reader, writer):
        try:
            length = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 5), "big")
            data = await reader.readexactly(length)
            if b"\x04late" in data:
                await asyncio.sleep(self.late_seconds)
            reply = self.answer(data)
            writer.write(len(reply).to_bytes(2, "big") + reply)
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self):
        self.udp_transport.close()
        self.tcp_server.close()


@pytest.fixture
async def dns_server():
    server = await DNSServer().start()
    yield server
    server.close()


def dns_module(timeout: float = 2.0, **options) -> Module:
    return Module.model_validate({"prober": "dns", "timeout": timeout, "dns": options})


def gauge(result, name: str, **labels) -> float:
    return result.gauges[name].samples[tuple(sorted(labels.items()))]


DNS_CASES = [
    # (options, success, reason)
    ({"query_name": "svc.test", "query_type": "A"}, True, ""),
    ({"query_name": "svc.test", "query_type": "A", "transport_protocol": "tcp"}, True, ""),
    ({"query_name": "missing.test", "query_type": "A"}, False, "dns_rcode"),
    ({"query_name": "missing.test", "query_type": "A", "valid_rcodes": ["NXDOMAIN"]}, True, ""),
    ({"query_name": "svc.test", "query_type": "A",
      "validate_answer_rrs": {"fail_if_not_matches_regexp": ["svc.test.\t300\tIN\tA\t127.0.0.9"]}}, True, ""),
    ({"query_name": "svc.test", "query_type": "A",
      "validate_answer_rrs": {"fail_if_matches_regexp": ["127\\.0\\.0\\.9"]}}, False, "dns_records"),
    ({"query_name": "svc.test", "query_type": "A",
      "validate_answer_rrs": {"fail_if_none_matches_regexp": ["10\\.0\\.0\\.1"]}}, False, "dns_records"),
    ({"query_name": "svc.test", "query_type": "A",
      "validate_authority_rrs": {"fail_if_all_match_regexp": ["SOA"]}}, False, "dns_records"),
    ({"query_name": "svc.test", "query_type": "A",
      "validate_additional_rrs": {"fail_if_matches_regexp": [".*"]}}, True, ""),
]


@pytest.mark.parametrize(("options", "success", "reason"), DNS_CASES)
async def test_dns_cases(dns_server, options, success, reason):
    result = await probe_dns(f"127.0.0.1:{dns_server.port}", dns_module(**options), 2.0)

    assert result.success is success, result.log_lines
    assert result.reason == reason


async def test_dns_gauges(dns_server):
    result = await probe_dns(f"127.0.0.1:{dns_server.port}", dns_module(query_name="svc.test", query_type="A"), 2.0)

    assert gauge(result, "probe_dns_answer_rrs") == 1
    assert gauge(result, "probe_dns_authority_rrs") == 1
    assert gauge(result, "probe_dns_serial") == 2024010101
    assert gauge(result, "probe_dns_query_succeeded") == 1
    assert {dict(k)["phase"] for k in result.gauges["probe_dns_duration_seconds"].samples} == {
        "resolve", "connect", "request"}


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_dns_answer_after_deadline(dns_server, transport):
    module = dns_module(0.5, query_name="late.test", query_type="A", transport_protocol=transport)

    started = time.monotonic()
    result = await probe_dns(f"127.0.0.1:{dns_server.port}", module, 0.5)
    elapsed = time.monotonic() - started

    assert result.success is False
    assert result.reason == "timeout"
    assert elapsed < 0.5 + 2.0
    assert gauge(result, "probe_dns_query_succeeded") == 0
    assert dns_server.queries <= 1


def test_dns_config_errors():
    with pytest.raises(ConfigError, match="query_type 'AAAAA' is unknown"):
        parse_config({"modules": {"d": {"prober": "dns", "dns": {"query_name": "a", "query_type": "AAAAA"}}}})
    with pytest.raises(ConfigError, match="needs dns.query_name"):
        parse_config({"modules": {"d": {"prober": "dns"}}})
    with pytest.raises(ConfigError, match="unsupported blackbox_exporter option 'dns_over_tls'"):
        parse_config({"modules": {"d": {"prober": "dns", "dns": {"query_name": "a", "dns_over_tls": True}}}})


# --- icmp -------------------------------------------------------------------------


@pytest.mark.parametrize("host, protocol", [("127.0.0.1", "ip4"), ("::1", "ip6")])
async def test_icmp_loopback(host, protocol):
    if not icmp_allowed(socket.AF_INET6 if protocol == "ip6" else socket.AF_INET):
        pytest.skip("neither datagram ICMP sockets (net.ipv4.ping_group_range) nor CAP_NET_RAW are available")
    module = Module.model_validate({"prober": "icmp", "timeout": "2s", "icmp": {"preferred_ip_protocol": protocol}})

    result = await probe_icmp(host, module, 2.0)

    assert result.success is True, result.log_lines
    assert gauge(result, "probe_icmp_duration_seconds", phase="rtt") > 0
    # The reply leaves the loopback interface with the kernel's default TTL or hop limit.
    default = Path("/proc/sys/net/ipv6/conf/lo/hop_limit" if protocol == "ip6"
                   else "/proc/sys/net/ipv4/ip_default_ttl").read_text()
    assert gauge(result, "probe_icmp_reply_hop_limit") == int(default)


def test_icmp_hop_limit_from_ancillary_data():
    as_int = struct.pack("i", 57)

    assert icmp_module.hop_limit_from_ancillary([(socket.IPPROTO_IP, socket.IP_TTL, as_int)]) == 57
    assert icmp_module.hop_limit_from_ancillary([(socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, as_int)]) == 57
    assert icmp_module.hop_limit_from_ancillary([(socket.IPPROTO_IP, socket.IP_TOS, as_int)]) is None
    assert icmp_module.hop_limit_from_ancillary([]) is None


class DeniedSocketModule:
    """The socket module as icmp.py imports it, except that socket() raises EPERM."""

    def __getattr__(self, name: str):
        return getattr(socket, name)

    @staticmethod
    def socket(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")


async def test_icmp_without_permission_names_it(monkeypatch):
    # Only icmp.py's reference changes, so the event loop can still open its own sockets.
    monkeypatch.setattr(icmp_module, "socket", DeniedSocketModule())
    module = Module.model_validate({"prober": "icmp", "timeout": "2s"})

    result = await probe_icmp("127.0.0.1", module, 2.0)

    assert result.reason == "icmp_permission"
    assert "net.ipv4.ping_group_range" in result.error
    assert "CAP_NET_RAW" in result.error


class StuckSocket:
    """A non-blocking socket whose sends fail with EAGAIN until the peer of `inner` reads."""

    def __init__(self, inner: socket.socket):
        self.inner = inner
        self.sent: list[bytes] = []

    def fileno(self) -> int:
        return self.inner.fileno()

    def setblocking(self, flag: bool) -> None:
        self.inner.setblocking(flag)

    def sendto(self, data: bytes, address) -> int:
        sent = self.inner.send(data)
        self.sent.append(data)
        return sent

    def recv(self, size: int) -> bytes:
        return self.inner.recv(size)

    def recvmsg(self, size: int, ancillary_size: int):
        return self.inner.recvmsg(size, ancillary_size)

    def setsockopt(self, level: int, option: int, value: int) -> None:
        # `inner` is a Unix socket, which rejects the IP-level options with OSError.
        self.inner.setsockopt(level, option, value)

    def close(self) -> None:
        self.inner.close()


def full_socketpair() -> tuple[socket.socket, socket.socket]:
    """Return a datagram socket pair whose first socket's send buffer is full."""
    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.setblocking(False)
    for _ in range(100_000):
        try:
            sender.send(b"x" * 1024)
        except BlockingIOError:
            return sender, receiver
    raise AssertionError("the send buffer never filled")


async def test_icmp_send_waits_until_writable():
    sender, receiver = full_socketpair()
    stuck = StuckSocket(sender)
    loop = asyncio.get_running_loop()
    try:
        task = asyncio.create_task(icmp_module._send(loop, stuck, b"echo", ("127.0.0.1", 0)))
        await asyncio.sleep(0.2)
        blocked = not task.done()
        receiver.setblocking(False)
        while True:
            try:
                receiver.recv(2048)
            except BlockingIOError:
                break
        await asyncio.wait_for(task, 2.0)
    finally:
        sender.close()
        receiver.close()

    assert blocked
    assert stuck.sent == [b"echo"]


async def test_icmp_unwritable_socket_times_out(monkeypatch):
    sender, receiver = full_socketpair()
    stuck = StuckSocket(sender)
    monkeypatch.setattr(icmp_module, "open_icmp_socket", lambda family: (stuck, False))
    module = Module.model_validate({"prober": "icmp", "timeout": "2s"})
    loop = asyncio.get_running_loop()
    fd = sender.fileno()
    started = time.monotonic()
    try:
        result = await probe_icmp("127.0.0.1", module, 0.3)
        elapsed = time.monotonic() - started
        # asyncio's remove_writer returns True when a callback was still registered.
        # uvloop 0.23's returns None either way, so only the asyncio run checks this.
        writer_left = loop.remove_writer(fd)
    finally:
        sender.close()
        receiver.close()

    assert result.reason == "timeout"
    assert elapsed < 2.0
    assert stuck.sent == []
    assert not writer_left


# --- grpc --------------------------------------------------------------------------


@pytest.fixture
async def grpc_server():
    grpc = pytest.importorskip("grpc")
    health = pytest.importorskip("grpc_health.v1.health")
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await servicer.set("up", health_pb2.HealthCheckResponse.SERVING)
    await servicer.set("down", health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    yield port
    await server.stop(None)


GRPC_CASES = [("up", True, ""), ("down", False, "grpc_not_serving"), ("absent", False, "grpc_status")]


@pytest.mark.parametrize(("service", "success", "reason"), GRPC_CASES)
async def test_grpc_health(grpc_server, service, success, reason):
    module = Module.model_validate({"prober": "grpc", "timeout": "3s", "grpc": {"service": service}})

    result = await probe_grpc(f"127.0.0.1:{grpc_server}", module, 3.0)

    assert result.success is success, result.log_lines
    assert result.reason == reason
    if success:
        assert gauge(result, "probe_grpc_healthcheck_response", serving_status="SERVING") == 1


DATAGRAM_PROBE = """
import asyncio, json, socket, sys
import uvloop
from slawatch.config import Module
from slawatch.probers import icmp

sock, raw = icmp.open_icmp_socket(socket.AF_INET)
sock.close()
module = Module.model_validate({"prober": "icmp", "timeout": "2s", "icmp": {"preferred_ip_protocol": "ip4"}})
results = {}
for name, factory in (("asyncio", asyncio.new_event_loop), ("uvloop", uvloop.new_event_loop)):
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(icmp.probe_icmp("127.0.0.1", module, 2.0))
    hop_limit = result.gauges.get("probe_icmp_reply_hop_limit")
    results[name] = {"success": result.success, "log": result.log_lines,
                     "hop_limit": hop_limit.samples[()] if hop_limit else None}
ttl = int(open("/proc/sys/net/ipv4/ip_default_ttl").read())
print(json.dumps({"raw": raw, "results": results, "default_ttl": ttl}))
"""


def test_icmp_datagram_socket_in_own_namespace():
    """Run the prober where unprivileged datagram ICMP is allowed: a new network namespace whose
    net.ipv4.ping_group_range covers every group, with only its own loopback interface."""
    if not all(shutil.which(tool) for tool in ("unshare", "ip", "sysctl")):
        pytest.skip("unshare, ip and sysctl (util-linux, iproute2, procps) are needed to make a network namespace")
    # Exit status 97: the namespace exists but cannot be set up (for example a read-only /proc/sys).
    script = ("{ ip link set lo up && sysctl -qw net.ipv4.ping_group_range='0 2147483647'; } || exit 97; "
              f"exec {sys.executable} -c \"$0\"")
    completed = subprocess.run(["unshare", "--net", "sh", "-c", script, DATAGRAM_PROBE], capture_output=True,
                               text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO / "exporter")})
    if completed.returncode == 97 or completed.stderr.startswith("unshare:"):
        pytest.skip(f"cannot set up a network namespace here: {completed.stderr.strip()}")
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)

    assert report["raw"] is False
    for name in ("asyncio", "uvloop"):
        assert report["results"][name]["success"] is True, report["results"][name]["log"]
        # A datagram socket has no IP header, so the TTL comes from IP_RECVTTL ancillary data.
        assert report["results"][name]["hop_limit"] == report["default_ttl"]
