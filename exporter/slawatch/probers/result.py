"""The outcome of one probe, as blackbox-style gauges plus the facts the scheduler needs."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Called with (host, ip) before every connection; returns why the address is
# denied, or None to allow it.
AddressGuard = Callable[[str, str], "str | None"]


_URL_USERINFO = re.compile(r"(://)[^/@\s]*@")


def redact_url(text: str) -> str:
    """Replace the user information (user:password@) of every URL in `text` with <secret>@."""
    return _URL_USERINFO.sub(r"\1<secret>@", text)


@dataclass
class Gauge:
    name: str
    help: str
    samples: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)


class ProbeLog(logging.LoggerAdapter):
    """A per-probe logger that keeps every line with its level for `?debug=true`.

    The lines reach the process log at DEBUG only, so a target that stays down
    does not fill the log. The scheduler logs when a target's state changes.
    """

    def __init__(self, logger: logging.Logger, target: str):
        super().__init__(logger, {"target": redact_url(target)})
        self.lines: list[str] = []
        self.started = time.monotonic()

    def process(self, msg, kwargs):
        return f"{msg} target={self.extra['target']}", kwargs

    def log(self, level, msg, *args, **kwargs):
        elapsed = time.monotonic() - self.started
        text = redact_url(msg % args if args else msg)
        self.lines.append(f"{elapsed:8.4f}s {logging.getLevelName(level):<5} {text}")
        super().log(logging.DEBUG, "%s", text, **kwargs)


@dataclass
class ProbeResult:
    """Gauges in blackbox_exporter's names, in the order they were set."""

    success: bool = False
    duration: float = 0.0
    # A bounded failure cause such as "dns", "connect", "tls", "http_status" or "timeout".
    reason: str = ""
    # The failure as a sentence for logs and ?debug=true; it may contain addresses, so never a metric label.
    error: str = ""
    phases: dict[str, float] = field(default_factory=dict)
    status_code: int = 0
    cert_expiry: float | None = None
    gauges: dict[str, Gauge] = field(default_factory=dict)
    # Why the guard denied an address: "not_allowed" or "link_local".
    denied_reason: str = ""
    # Body bytes per second over the transfer phase, or None when no body was read.
    transfer_rate: float | None = None
    log_lines: list[str] = field(default_factory=list)

    def set(self, name: str, help_text: str, value: float, **labels: str) -> None:
        gauge = self.gauges.setdefault(name, Gauge(name, help_text))
        gauge.samples[tuple(sorted(labels.items()))] = float(value)

    def fail(self, reason: str) -> "ProbeResult":
        self.success = False
        if not self.reason:
            self.reason = reason
        return self
