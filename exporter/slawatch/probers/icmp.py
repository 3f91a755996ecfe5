"""ICMP echo prober with blackbox_exporter's metric names.

It uses an unprivileged datagram ICMP socket when the kernel allows it
(Linux: the process's group is inside net.ipv4.ping_group_range) and a raw
socket otherwise, which needs CAP_NET_RAW. With neither it fails with
reason icmp_permission and a message naming both.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import time
from pathlib import Path

from ..config import Module
from .net import ProbeError, resolve, run_steps
from .result import AddressGuard, ProbeLog, ProbeResult

logger = logging.getLogger("slawatch.prober.icmp")

PHASE_HELP = "Duration of icmp request by phase"
HOP_LIMIT_HELP = "Replied packet hop limit (TTL for ipv4)"
PING_GROUP_RANGE = Path("/proc/sys/net/ipv4/ping_group_range")
# Linux's IP_RECVTTL (include/uapi/linux/in.h), which Python's socket module
# does not define. With it, recvmsg returns the TTL as IP_TTL ancillary data.
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
# Room for one int of ancillary data (the TTL or the hop limit).
ANCILLARY_SIZE = socket.CMSG_SPACE(struct.calcsize("i"))


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo_request(family: int, identifier: int, sequence: int, payload: bytes) -> bytes:
    kind = 128 if family == socket.AF_INET6 else 8
    header = struct.pack("!BBHHH", kind, 0, 0, identifier, sequence)
    if family == socket.AF_INET6:
        # The kernel fills in the ICMPv6 checksum, which covers a pseudo-header.
        return header + payload
    checksum = _checksum(header + payload)
    return struct.pack("!BBHHH", kind, 0, checksum, identifier, sequence) + payload


def open_icmp_socket(family: int) -> tuple[socket.socket, bool]:
    """Open a datagram ICMP socket, or a raw one; return it and whether it is raw. Raises ProbeError."""
    protocol = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    try:
        return socket.socket(family, socket.SOCK_DGRAM, protocol), False
    except PermissionError:
        pass
    try:
        return socket.socket(family, socket.SOCK_RAW, protocol), True
    except PermissionError:
        try:
            group_range = PING_GROUP_RANGE.read_text().split()
        except OSError:
            group_range = ["?", "?"]
        raise ProbeError(
            "icmp_permission",
            f"cannot open an ICMP socket: group {os.getgid()} is outside net.ipv4.ping_group_range "
            f"{' '.join(group_range)} and the process lacks CAP_NET_RAW; widen the range with "
            f"sysctl net.ipv4.ping_group_range='0 2147483647' or grant CAP_NET_RAW",
        ) from None


async def probe_icmp(target: str, module: Module, timeout: float, guard: AddressGuard | None = None) -> ProbeResult:
    """Send one ICMP echo request and wait for the reply; catches target faults and returns them as a failed result."""
    result = ProbeResult()
    log = ProbeLog(logger, target)
    started = time.monotonic()
    if await run_steps(_ping(target.strip("[]"), module, result, log, guard), timeout, result, log):
        result.success = True
        log.info("Found matching reply")
    result.duration = time.monotonic() - started
    result.probe_log = log
    for phase, seconds in result.phases.items():
        result.set("probe_icmp_duration_seconds", PHASE_HELP, seconds, phase=phase)
    return result


def request_hop_limit(sock: socket.socket, family: int, raw: bool) -> bool:
    """Ask the kernel to attach the TTL or hop limit of received packets; return whether it will.

    A raw IPv4 socket needs no option because it receives the IP header, which
    contains the TTL.
    """
    if family == socket.AF_INET and raw:
        return True
    level, option = ((socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT) if family == socket.AF_INET6
                     else (socket.IPPROTO_IP, IP_RECVTTL))
    try:
        sock.setsockopt(level, option, 1)
    except OSError as error:
        logger.debug("Cannot request the reply hop limit family=%s raw_socket=%s error=%s", family, raw, error)
        return False
    return True


def hop_limit_from_ancillary(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """Return the TTL or hop limit that recvmsg reported in `ancillary`, or None."""
    for level, kind, data in ancillary:
        if (level, kind) in ((socket.IPPROTO_IP, socket.IP_TTL), (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT)):
            if len(data) >= struct.calcsize("i"):
                return struct.unpack("i", data[:struct.calcsize("i")])[0]
            if len(data) == 1:
                return data[0]
    return None


async def _ping(host: str, module: Module, result: ProbeResult, log: ProbeLog, guard: AddressGuard | None) -> None:
    options = module.icmp
    mark = time.monotonic()
    resolved = await resolve(host, options.preferred_ip_protocol, options.ip_protocol_fallback, result, log, guard)
    result.phases["resolve"] = time.monotonic() - mark

    mark = time.monotonic()
    sock, raw = open_icmp_socket(resolved.family)
    loop = asyncio.get_running_loop()
    try:
        sock.setblocking(False)
        hop_limit_requested = request_hop_limit(sock, resolved.family, raw)
        if options.ttl is not None:
            level, option = ((socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS) if resolved.family == socket.AF_INET6
                             else (socket.IPPROTO_IP, socket.IP_TTL))
            sock.setsockopt(level, option, options.ttl)
        identifier = os.getpid() & 0xFFFF
        sequence = int(time.monotonic() * 1000) & 0xFFFF
        payload = bytes(range(256)) * (options.payload_size // 256) + bytes(range(options.payload_size % 256))
        packet = _echo_request(resolved.family, identifier, sequence, payload)
        result.phases["setup"] = time.monotonic() - mark
        log.debug("Sending ICMP echo request ip=%s raw_socket=%s", resolved.ip, raw)

        mark = time.monotonic()
        await _send(loop, sock, packet, (resolved.ip, 0))
        reply_type = 129 if resolved.family == socket.AF_INET6 else 0
        while True:
            data, ancillary = await _receive(loop, sock, 65535)
            hop_limit = hop_limit_from_ancillary(ancillary)
            if raw and resolved.family == socket.AF_INET:
                # The IPv4 header comes first: its TTL is byte 8 and its length is IHL 32-bit words.
                hop_limit = data[8] if len(data) > 8 else None
                data = data[(data[0] & 0x0F) * 4:]
            if len(data) < 8:
                continue
            kind, _, _, reply_id, reply_seq = struct.unpack("!BBHHH", data[:8])
            # A datagram socket's kernel rewrites the identifier, so only the
            # sequence and payload identify the reply there.
            if kind == reply_type and reply_seq == sequence and data[8:] == payload and (not raw or reply_id == identifier):
                break
        result.phases["rtt"] = time.monotonic() - mark
        if hop_limit is not None:
            result.set("probe_icmp_reply_hop_limit", HOP_LIMIT_HELP, hop_limit)
        elif hop_limit_requested:
            log.debug("The reply carried no hop limit, so probe_icmp_reply_hop_limit is not exported")
    finally:
        sock.close()


# The socket is used directly, with add_writer and add_reader to wait, because
# uvloop 0.23 raises NotImplementedError for loop.sock_sendto. Both the default
# asyncio loop and uvloop implement add_writer and add_reader.


async def _send(loop: asyncio.AbstractEventLoop, sock: socket.socket, packet: bytes, address: tuple) -> None:
    while True:
        try:
            sock.sendto(packet, address)
            return
        except (BlockingIOError, InterruptedError):
            await _wait_ready(loop, sock, writable=True)


async def _receive(loop: asyncio.AbstractEventLoop, sock: socket.socket,
                   size: int) -> tuple[bytes, list[tuple[int, int, bytes]]]:
    """Receive one packet and its ancillary data."""
    while True:
        try:
            data, ancillary, _, _ = sock.recvmsg(size, ANCILLARY_SIZE)
            return data, ancillary
        except (BlockingIOError, InterruptedError):
            await _wait_ready(loop, sock, writable=False)


async def _wait_ready(loop: asyncio.AbstractEventLoop, sock: socket.socket, writable: bool) -> None:
    """Wait until `sock` is writable or readable. The probe deadline cancels the wait."""
    add, remove = (loop.add_writer, loop.remove_writer) if writable else (loop.add_reader, loop.remove_reader)
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    fd = sock.fileno()
    add(fd, wake)
    try:
        await ready
    finally:
        remove(fd)
