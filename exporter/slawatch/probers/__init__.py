"""Probers: each takes a target, a module and a deadline and returns a ProbeResult.

Probers know no web route, config file or scheduler, so `/probe` and the
scheduled probes share them unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..config import Module
from .dns import probe_dns
from .grpc import probe_grpc
from .http import probe_http
from .icmp import probe_icmp
from .result import AddressGuard, ProbeResult
from .tcp import probe_tcp

Prober = Callable[[str, Module, float, AddressGuard | None], Awaitable[ProbeResult]]

PROBERS: dict[str, Prober] = {
    "http": probe_http,
    "tcp": probe_tcp,
    "dns": probe_dns,
    "icmp": probe_icmp,
    "grpc": probe_grpc,
}

__all__ = ["PROBERS", "AddressGuard", "ProbeResult", "Prober", "probe_dns", "probe_grpc", "probe_http", "probe_icmp",
           "probe_tcp"]
