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
    if "@" not in text:
        return text
    return _URL_USERINFO.sub(r"\1<secret>@", text)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def printable(text: str) -> str:
    """Percent-encode control characters, so a target shown in a log or header line stays on one line."""
    return _CONTROL.sub(lambda m: f"%{ord(m[0]):02X}", text)


@dataclass
class Gauge:
    name: str
    help: str
    samples: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)


class ProbeLog(logging.LoggerAdapter):
    """A per-probe logger that keeps every line with its level for `?debug=true`.

    The lines reach the process log at DEBUG only, so a target that stays down
    does not fill the log. The scheduler logs when a target's state changes.
    Each line is stored unformatted and formatted only when `lines` is read or
    the process log is at DEBUG, because most probes never show their lines.
    So pass arguments that do not change later, such as strings and numbers.
    """

    def __init__(self, logger: logging.Logger, target: str):
        super().__init__(logger, {"target": target})
        # (seconds since the probe started, level, message, arguments)
        self.records: list[tuple[float, int, str, tuple]] = []
        self.started = time.monotonic()

    @property
    def lines(self) -> list[str]:
        """The lines for `?debug=true`: seconds since the start, level and message, with URL secrets redacted."""
        return [f"{elapsed:8.4f}s {logging.getLevelName(level):<5} {_redacted_text(msg, args)}"
                for elapsed, level, msg, args in self.records]

    def log(self, level, msg, *args, **kwargs):
        self.records.append((time.monotonic() - self.started, level, msg, args))
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.log(logging.DEBUG, "%s target=%s", _redacted_text(msg, args),
                            printable(redact_url(self.extra["target"])), **kwargs)


def _redacted_text(msg: str, args: tuple) -> str:
    return redact_url(msg % args if args else msg)


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
    # The prober's log, kept so `log_lines` formats its lines only when they are read.
    probe_log: ProbeLog | None = None

    @property
    def log_lines(self) -> list[str]:
        """The probe's log lines for `?debug=true`, empty when the prober kept no log."""
        return self.probe_log.lines if self.probe_log is not None else []

    def set(self, name: str, help_text: str, value: float, **labels: str) -> None:
        gauge = self.gauges.get(name)
        if gauge is None:
            gauge = self.gauges[name] = Gauge(name, help_text)
        gauge.samples[tuple(sorted(labels.items())) if labels else ()] = float(value)

    def fail(self, reason: str) -> "ProbeResult":
        self.success = False
        if not self.reason:
            self.reason = reason
        return self
