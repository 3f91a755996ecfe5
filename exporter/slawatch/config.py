"""The slawatch.yml config model, its loader and its validation errors.

One YAML file drives the exporter, the generated rules, the Alertmanager
inputs and the dashboards. `load_config(path)` returns a validated `Config`
or raises `ConfigError` whose message names the file, the key path and the fix.
"""

from __future__ import annotations

import ipaddress
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from .durations import format_duration, format_le, parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration)]

LABEL_VALUE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.-]*$")
LOCALES = ("en", "zh-CN")

DEFAULT_PROBE_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
DEFAULT_FIRST_RESPONSE_BUCKETS = [60.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0]
DEFAULT_RESOLUTION_BUCKETS = [3600.0, 14400.0, 28800.0, 86400.0, 172800.0, 259200.0, 604800.0]
# Bytes per second: 100 kB/s to 100 MB/s.
DEFAULT_TRANSFER_SPEED_BUCKETS = [1e5, 1e6, 5e6, 1e7, 5e7, 1e8]


class ConfigError(ValueError):
    """A config file that cannot be used, with one line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid config:\n" + "\n".join(f"  - {p}" for p in problems))


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_label_value(value: str) -> str:
    if not LABEL_VALUE.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use letters, digits, '_', '.' or '-', starting with a letter"
        )
    return value


LabelName = Annotated[str, BeforeValidator(lambda v: _check_label_value(str(v)) if v is not None else v)]

PROMETHEUS_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _check_prometheus_label_name(name: str) -> str:
    if not PROMETHEUS_LABEL_NAME.match(name):
        raise ValueError(f"{name!r} is not a valid Prometheus label name: use letters, digits and '_'")
    return name


PrometheusLabelName = Annotated[str, BeforeValidator(lambda v: _check_prometheus_label_name(str(v)))]


class TLSConfig(StrictModel):
    """TLS client settings, named as in blackbox_exporter's tls_config."""

    insecure_skip_verify: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] | None = None


class HTTPProbeConfig(StrictModel):
    """Options of the http prober, a subset of blackbox_exporter's `http:` block."""

    valid_status_codes: list[int] = Field(default_factory=list)
    valid_http_versions: list[str] = Field(default_factory=list)
    method: str = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    follow_redirects: bool = True
    fail_if_ssl: bool = False
    fail_if_not_ssl: bool = False
    tls_config: TLSConfig = Field(default_factory=TLSConfig)
    preferred_ip_protocol: Literal["ip4", "ip6"] = "ip6"
    ip_protocol_fallback: bool = True

    @field_validator("valid_status_codes")
    @classmethod
    def _status_codes_in_range(cls, codes: list[int]) -> list[int]:
        for code in codes:
            if not 100 <= code <= 599:
                raise ValueError(f"status code {code} is out of range: use codes between 100 and 599")
        return codes


class TCPProbeConfig(StrictModel):
    """Options of the tcp prober, a subset of blackbox_exporter's `tcp:` block."""

    preferred_ip_protocol: Literal["ip4", "ip6"] = "ip6"
    ip_protocol_fallback: bool = True
    tls: bool = False
    tls_config: TLSConfig = Field(default_factory=TLSConfig)


class Module(StrictModel):
    """A probe module in blackbox_exporter's format."""

    prober: Literal["http", "tcp"]
    timeout: Duration = 10.0
    http: HTTPProbeConfig = Field(default_factory=HTTPProbeConfig)
    tcp: TCPProbeConfig = Field(default_factory=TCPProbeConfig)

    @field_validator("timeout")
    @classmethod
    def _positive_timeout(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("timeout must be greater than 0s, for example 5s")
        return value


class Target(StrictModel):
    """A target that the exporter probes on its own schedule."""

    service: LabelName
    url: str
    module: str = "http_2xx"
    interval: Duration = 30.0
    public: bool = True

    @field_validator("interval")
    @classmethod
    def _interval_floor(cls, value: float) -> float:
        if value < 1:
            raise ValueError(f"interval {format_duration(value)} is too short: use 1s or more")
        return value


class Calendar(StrictModel):
    timezone: str = "UTC"


class TicketsConfig(StrictModel):
    database: str = "slawatch-tickets.db"
    channels: list[LabelName] = Field(default_factory=lambda: ["phone", "email", "chat", "forum"])
    priorities: list[LabelName] = Field(default_factory=lambda: ["low", "normal", "high", "urgent"])
    first_response_buckets: list[float] = Field(default_factory=lambda: list(DEFAULT_FIRST_RESPONSE_BUCKETS))
    resolution_buckets: list[float] = Field(default_factory=lambda: list(DEFAULT_RESOLUTION_BUCKETS))

    @field_validator("first_response_buckets", "resolution_buckets")
    @classmethod
    def _sorted_buckets(cls, buckets: list[float]) -> list[float]:
        return _check_buckets(buckets)


class ProbeSecurity(StrictModel):
    """Which hosts `/probe` may reach: host names, IP addresses or CIDR ranges."""

    allow: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128", "localhost"])
    allow_configured_targets: bool = True

    @field_validator("allow")
    @classmethod
    def _valid_entries(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            if "/" in entry:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(f"{entry!r} is not a valid CIDR range, for example 10.0.0.0/8") from None
        return entries


class BurnWindow(StrictModel):
    """One multi-window burn-rate alert condition."""

    severity: Literal["page", "ticket"]
    long: Duration
    short: Duration
    factor: float = Field(gt=0)
    for_: Duration = Field(default=0.0, alias="for")

    @model_validator(mode="after")
    def _short_below_long(self) -> "BurnWindow":
        if self.short >= self.long:
            raise ValueError(
                f"short window {format_duration(self.short)} must be shorter than long window {format_duration(self.long)}"
            )
        return self


DEFAULT_BURN_WINDOWS = [
    {"severity": "page", "long": "1h", "short": "5m", "factor": 14.4},
    {"severity": "page", "long": "6h", "short": "30m", "factor": 6},
    {"severity": "ticket", "long": "1d", "short": "2h", "factor": 3, "for": "1h"},
    {"severity": "ticket", "long": "3d", "short": "6h", "factor": 1, "for": "3h"},
]


class AlertingConfig(StrictModel):
    runbook_base_url: str = "http://localhost:9115/runbooks"
    grafana_url: str = "http://localhost:3000"
    burn_windows: list[BurnWindow] = Field(default_factory=lambda: [BurnWindow(**w) for w in DEFAULT_BURN_WINDOWS])
    # Scheduled-probe samples older than this count as absent data.
    absent_for: Duration = 10 * 60.0
    # A burn condition counts only when its long window contains at least this
    # many events, and at least 1 / threshold (docs/slo-rules.md explains why).
    min_events: int = Field(default=10, ge=1)
    # Share of failed events in the short window of the fastest page that
    # counts as an outage and pages at once, for objectives whose burn
    # threshold the long window reaches too late.
    outage_ratio: float = Field(default=0.8, gt=0, le=1)


SLIKind = Literal[
    "probe_availability",
    "probe_latency",
    "transfer_speed",
    "ticket_first_response",
    "ticket_resolution",
    "custom_ratio",
]
TICKET_SLIS = ("ticket_first_response", "ticket_resolution")
THRESHOLD_SLIS = ("probe_latency", "transfer_speed", "ticket_first_response", "ticket_resolution")
CHAT_KINDS = ("wecom", "dingtalk", "feishu", "slack")
# Placeholder for the range of a custom_ratio query, as in Sloth's spec.
WINDOW_PLACEHOLDER = "{{.window}}"


def check_window_query(query: str) -> str:
    """Check that `query` is valid PromQL once its {{.window}} ranges are filled in."""
    import promql_parser

    if WINDOW_PLACEHOLDER not in query:
        raise ValueError(
            f"query {query!r} has no {WINDOW_PLACEHOLDER} placeholder: write the range as [{WINDOW_PLACEHOLDER}], "
            f"for example sum(rate(http_requests_total[{WINDOW_PLACEHOLDER}]))"
        )
    try:
        promql_parser.parse(query.replace(WINDOW_PLACEHOLDER, "5m"))
    except ValueError as error:
        raise ValueError(f"query {query!r} is not valid PromQL: {error}: fix the expression") from None
    return query


class SLO(StrictModel):
    """A service-level objective; one spec drives rules, alerts and dashboards."""

    name: LabelName
    service: LabelName
    sli: SLIKind
    objective: float = Field(gt=0, lt=100, description="percent of good events, for example 95 or 99.9")
    window: Duration = 30 * 86400.0
    # Seconds for latency and ticket SLIs, bytes per second for transfer_speed.
    threshold: Duration | None = None
    team: LabelName = "sre"
    channel: LabelName | None = None
    priority: LabelName | None = None
    description: str = ""
    # probe_availability: "counters" reads the scheduled-probe counters,
    # "probe_success" reads probe_success from /probe scrapes.
    source: Literal["counters", "probe_success"] = "counters"
    # Extra label matchers on the SLI's series, for example {job: blackbox}.
    matchers: dict[PrometheusLabelName, str] = Field(default_factory=dict)
    # Ticket SLIs: the clock that measured the time, and the ticket team.
    clock: Literal["business", "calendar"] = "business"
    ticket_team: LabelName | None = None
    # custom_ratio: PromQL with [{{.window}}] ranges, one of bad or good, and total.
    bad_query: str | None = None
    good_query: str | None = None
    total_query: str | None = None
    # Alert routing: the chat kind and extra labels put on every alert.
    chat: Literal["wecom", "dingtalk", "feishu", "slack"] | None = None
    labels: dict[PrometheusLabelName, str] = Field(default_factory=dict)

    @field_validator("bad_query", "good_query", "total_query")
    @classmethod
    def _valid_query(cls, query: str | None) -> str | None:
        return check_window_query(query) if query is not None else None

    @model_validator(mode="after")
    def _threshold_matches_kind(self) -> "SLO":
        examples = {"probe_latency": "1s", "transfer_speed": 1000000, "ticket_first_response": "1h",
                    "ticket_resolution": "1d"}
        if self.sli in THRESHOLD_SLIS and self.threshold is None:
            raise ValueError(f"sli {self.sli} needs a threshold, for example threshold: {examples[self.sli]}")
        if self.sli not in THRESHOLD_SLIS and self.threshold is not None:
            raise ValueError(f"sli {self.sli} takes no threshold: remove it")
        if self.sli not in TICKET_SLIS and (self.channel or self.priority or self.ticket_team):
            raise ValueError("channel, priority and ticket_team apply only to the ticket SLIs")
        if self.sli != "probe_availability" and self.source != "counters":
            raise ValueError("source applies only to sli probe_availability: remove it")
        if self.source == "probe_success" and not self.matchers:
            raise ValueError(
                "source probe_success needs matchers that select the /probe scrapes, "
                "for example matchers: {job: blackbox, instance: 'https://example.com/'}"
            )
        queries = (self.bad_query, self.good_query, self.total_query)
        if self.sli == "custom_ratio":
            if self.total_query is None or (self.bad_query is None) == (self.good_query is None):
                raise ValueError("sli custom_ratio needs total_query and exactly one of bad_query or good_query")
        elif any(query is not None for query in queries):
            raise ValueError("bad_query, good_query and total_query apply only to sli custom_ratio")
        reserved = {"slo", "service", "team", "severity", "chat", "alertname", "long_window", "short_window"}
        clashes = sorted(reserved & set(self.labels))
        if clashes:
            raise ValueError(f"labels {clashes} are set by slawatch: use other label names")
        return self

    @property
    def error_budget(self) -> float:
        return 1 - self.objective / 100


class GlobalConfig(StrictModel):
    location: LabelName = "default"
    locale: Literal["en", "zh-CN"] = "en"
    probe_duration_buckets: list[float] = Field(default_factory=lambda: list(DEFAULT_PROBE_BUCKETS))
    max_concurrent_probes: int = Field(default=64, ge=1)
    transfer_speed_buckets: list[float] = Field(default_factory=lambda: list(DEFAULT_TRANSFER_SPEED_BUCKETS))

    @field_validator("probe_duration_buckets", "transfer_speed_buckets")
    @classmethod
    def _sorted_buckets(cls, buckets: list[float]) -> list[float]:
        return _check_buckets(buckets)


class Config(StrictModel):
    global_: GlobalConfig = Field(default_factory=GlobalConfig, alias="global")
    modules: dict[str, Module] = Field(default_factory=dict)
    targets: list[Target] = Field(default_factory=list)
    probe: ProbeSecurity = Field(default_factory=ProbeSecurity)
    tickets: TicketsConfig = Field(default_factory=TicketsConfig)
    alerting: AlertingConfig = Field(default_factory=AlertingConfig)
    slos: list[SLO] = Field(default_factory=list)

    def slo_label_values(self) -> list[str]:
        return [slo.name for slo in self.slos]


def _check_buckets(buckets: list[float]) -> list[float]:
    if not buckets:
        raise ValueError("at least one bucket is needed")
    if any(b <= 0 for b in buckets):
        raise ValueError("bucket bounds must be greater than 0")
    if sorted(set(buckets)) != list(buckets):
        raise ValueError("bucket bounds must be sorted ascending with no duplicates")
    return [float(b) for b in buckets]


def _cross_checks(config: Config) -> list[str]:
    """Return problems that involve more than one section of the config."""
    problems = []
    known_modules = sorted(config.modules)

    for index, target in enumerate(config.targets):
        path = f"targets[{index}]"
        if target.module not in config.modules:
            problems.append(
                f"{path}.module: unknown module {target.module!r}: use one of {known_modules} or add it under modules:"
            )
        else:
            module = config.modules[target.module]
            problem = check_target(target.url, module.prober)
            if problem:
                problems.append(f"{path}.url: {problem}")
            elif module.timeout >= target.interval:
                problems.append(
                    f"{path}.interval: {format_duration(target.interval)} is not longer than module "
                    f"{target.module!r} timeout {format_duration(module.timeout)}: raise the interval or lower the timeout"
                )

    services = {t.service for t in config.targets}
    names = set()
    for index, slo in enumerate(config.slos):
        path = f"slos[{index}]"
        if slo.name in names:
            problems.append(f"{path}.name: duplicate SLO name {slo.name!r}: give each SLO a unique name")
        names.add(slo.name)
        probed = slo.sli in ("probe_latency", "transfer_speed") or (
            slo.sli == "probe_availability" and slo.source == "counters"
        )
        if probed and slo.service not in services:
            problems.append(
                f"{path}.service: no target has service {slo.service!r}: add a target with that service or fix the name"
            )
        if slo.sli == "probe_latency":
            buckets = config.global_.probe_duration_buckets
            if slo.threshold not in buckets:
                problems.append(
                    f"{path}.threshold: {format_duration(slo.threshold)} is not a bucket boundary of "
                    f"global.probe_duration_buckets {[format_le(b) for b in buckets]}: use one of them or add it to the buckets"
                )
        if slo.sli == "transfer_speed":
            buckets = config.global_.transfer_speed_buckets
            if slo.threshold not in buckets:
                problems.append(
                    f"{path}.threshold: {slo.threshold:g} bytes/s is not a bucket boundary of "
                    f"global.transfer_speed_buckets {[f'{b:g}' for b in buckets]}: use one of them or add it to the buckets"
                )
        if slo.sli in TICKET_SLIS:
            key = "first_response_buckets" if slo.sli == "ticket_first_response" else "resolution_buckets"
            buckets = getattr(config.tickets, key)
            if slo.threshold not in buckets:
                problems.append(
                    f"{path}.threshold: {format_duration(slo.threshold)} is not a bucket boundary of "
                    f"tickets.{key} {[format_duration(b) for b in buckets]}: use one of them or add it"
                )
            if slo.channel and slo.channel not in config.tickets.channels:
                problems.append(f"{path}.channel: unknown channel {slo.channel!r}: use one of {config.tickets.channels}")
            if slo.priority and slo.priority not in config.tickets.priorities:
                problems.append(
                    f"{path}.priority: unknown priority {slo.priority!r}: use one of {config.tickets.priorities}"
                )
    return problems


def check_target(url: str, prober: str) -> str | None:
    """Return why `url` is not a valid target for `prober`, or None if it is."""
    if prober == "http":
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https"):
            return f"{url!r} has scheme {parts.scheme!r}: the http prober takes http:// or https:// URLs"
        if not parts.hostname:
            return f"{url!r} has no host: use a URL like https://example.com/health"
        try:
            parts.port
        except ValueError:
            return f"{url!r} has an invalid port: use a number between 1 and 65535"
        return None

    host, port = split_host_port(url)
    if not host or port is None:
        return f"{url!r} is not host:port: the tcp prober takes targets like example.com:443 or [::1]:22"
    return None


def split_host_port(target: str) -> tuple[str, int | None]:
    """Split "host:port" or "[v6]:port"; the port is None when missing or invalid."""
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = target.rpartition(":")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return host, None
    return host, int(port_text)


_FIXES = {
    "extra_forbidden": "unknown or unsupported key: remove it or check its spelling",
    "missing": "required key is missing: add it",
    "literal_error": None,
    "bool_type": "expected true or false",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a mapping of keys to values",
    "model_type": "expected a mapping of keys to values",
}


def _format_location(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            name = {"global_": "global", "for_": "for"}.get(str(part), str(part))
            path += f".{name}" if path else name
    return path or "(top level)"


def _format_validation_error(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        loc = tuple(p for p in item["loc"] if p not in ("function-after[_threshold_matches_kind(), SLO]",))
        path = _format_location(loc)
        kind = item["type"]
        fix = _FIXES.get(kind)
        message = item["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
        if message.startswith("Input should be "):
            message = "must be " + message[len("Input should be "):]
        if kind in ("extra_forbidden", "missing"):
            problems.append(f"{path}: {fix}")
        elif fix:
            problems.append(f"{path}: {fix}, got {item.get('input')!r}")
        else:
            # A whole mapping, or a query that the message already quotes, adds only noise.
            quoted = message.startswith(("sli ", "short window", "query ")) or isinstance(item.get("input"), dict)
            shown = f", got {item['input']!r}" if "input" in item and not quoted else ""
            problems.append(f"{path}: {message}{shown}")
    return problems


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Validate already-parsed YAML data; raise ConfigError naming each problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [f"(top level): expected a mapping of sections, got {type(data).__name__}"])

    try:
        config = Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(source, _format_validation_error(error)) from None

    problems = _cross_checks(config)
    if problems:
        raise ConfigError(source, problems)
    return config


def load_config(path: str | Path | None) -> Config:
    """Load a config file, or the embedded default config when path is None."""
    if path is None:
        text = default_config_text()
        source = "<embedded default config>"
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(source, [f"cannot read the file: {error.strerror}: check the path"]) from None

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(source, [f"{where}invalid YAML: {problem}"]) from None
    return parse_config(data, source)


def default_config_text() -> str:
    return resources.files("slawatch").joinpath("default_config.yml").read_text(encoding="utf-8")
