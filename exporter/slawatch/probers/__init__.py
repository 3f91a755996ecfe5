"""Probers: each takes a target, a module and a deadline and returns a ProbeResult.

Probers know no web route, config file or scheduler, so `/probe` and the
scheduled probes share them unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..config import Module
from .http import probe_http
from .result import AddressGuard, ProbeResult
from .tcp import probe_tcp

Prober = Callable[[str, Module, float, AddressGuard | None], Awaitable[ProbeResult]]

PROBERS: dict[str, Prober] = {
    "http": probe_http,
    "tcp": probe_tcp,
}

__all__ = ["PROBERS", "AddressGuard", "ProbeResult", "Prober", "probe_http", "probe_tcp"]
