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

    @field_validator("first_response_buckets")
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
    {"severity": "page", "long": "1h", "short": "5m", "factor": 14.4, "for": "2m"},
    {"severity": "page", "long": "6h", "short": "30m", "factor": 6, "for": "15m"},
    {"severity": "ticket", "long": "1d", "short": "2h", "factor": 3, "for": "1h"},
    {"severity": "ticket", "long": "3d", "short": "6h", "factor": 1, "for": "3h"},
]


class AlertingConfig(StrictModel):
    runbook_base_url: str = "http://localhost:9115/runbooks"
    grafana_url: str = "http://localhost:3000"
    burn_windows: list[BurnWindow] = Field(default_factory=lambda: [BurnWindow(**w) for w in DEFAULT_BURN_WINDOWS])
    # Scheduled-probe samples older than this count as absent data.
    absent_for: Duration = 10 * 60.0


RELAY_KINDS = ("dingtalk", "feishu", "wecom")
# DingTalk and WeCom document 20 messages a minute per robot. Feishu allows
# 100 a minute and 5 a second, so 20 a minute suits all three.
MAX_RELAY_MESSAGES_PER_MINUTE = 20


class RelayRobot(StrictModel):
    """A chat robot that the relay posts to, with its secrets in files.

    DingTalk and Feishu robots take `url_file`, a file containing the full
    webhook URL (its access token is the secret), and an optional
    `secret_file` when the robot has signing turned on. A WeCom group robot
    takes `key_file`, a file containing the key, and `url`, the webhook
    address without the key.
    """

    kind: Literal["dingtalk", "feishu", "wecom"]
    url_file: str | None = None
    secret_file: str | None = None
    key_file: str | None = None
    url: str = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"

    @model_validator(mode="after")
    def _files_match_kind(self) -> "RelayRobot":
        if self.kind == "wecom":
            if not self.key_file:
                raise ValueError("a wecom robot needs key_file: the path of a file containing the webhook key")
            if self.url_file or self.secret_file:
                raise ValueError("a wecom robot takes key_file and url, not url_file or secret_file: remove them")
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
                raise ValueError(f"url {self.url!r} must be an http(s) URL without a query: the key comes from key_file")
        else:
            if not self.url_file:
                raise ValueError(f"a {self.kind} robot needs url_file: the path of a file containing the webhook URL")
            if self.key_file:
                raise ValueError(f"a {self.kind} robot takes url_file and secret_file, not key_file: remove it")
        return self

    def secret_paths(self) -> dict[str, str]:
        """Return the configured secret files by key name."""
        paths = {"url_file": self.url_file, "secret_file": self.secret_file, "key_file": self.key_file}
        return {key: path for key, path in paths.items() if path}


class RelayConfig(StrictModel):
    """The chat relay that turns Alertmanager webhooks into signed robot messages."""

    robots: dict[LabelName, RelayRobot] = Field(default_factory=dict)
    max_messages_per_minute: int = Field(default=MAX_RELAY_MESSAGES_PER_MINUTE, ge=1,
                                         le=MAX_RELAY_MESSAGES_PER_MINUTE)
    # How long a request waits for a free slot in the rate limit before the
    # relay returns 503 so that Alertmanager retries later.
    queue_wait: Duration = 5.0
    timeout: Duration = 10.0

    @field_validator("timeout")
    @classmethod
    def _positive_timeout(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("timeout must be greater than 0s, for example 10s")
        return value

    @field_validator("queue_wait")
    @classmethod
    def _queue_wait_range(cls, value: float) -> float:
        if not 0 <= value <= 30:
            raise ValueError(f"queue_wait {format_duration(value)} is out of range: use 0s to 30s")
        return value


SLIKind = Literal["probe_availability", "probe_latency", "ticket_first_response"]


class SLO(StrictModel):
    """A service-level objective; one spec drives rules, alerts and dashboards."""

    name: LabelName
    service: LabelName
    sli: SLIKind
    objective: float = Field(gt=0, lt=100, description="percent of good events, for example 95 or 99.9")
    window: Duration = 30 * 86400.0
    threshold: Duration | None = None
    team: LabelName = "sre"
    channel: LabelName | None = None
    priority: LabelName | None = None
    description: str = ""

    @model_validator(mode="after")
    def _threshold_matches_kind(self) -> "SLO":
        if self.sli in ("probe_latency", "ticket_first_response") and self.threshold is None:
            example = "1s" if self.sli == "probe_latency" else "1h"
            raise ValueError(f"sli {self.sli} needs a threshold, for example threshold: {example}")
        if self.sli == "probe_availability" and self.threshold is not None:
            raise ValueError("sli probe_availability takes no threshold: remove it")
        if self.sli != "ticket_first_response" and (self.channel or self.priority):
            raise ValueError("channel and priority apply only to sli ticket_first_response")
        return self

    @property
    def error_budget(self) -> float:
        return 1 - self.objective / 100


class GlobalConfig(StrictModel):
    location: LabelName = "default"
    locale: Literal["en", "zh-CN"] = "en"
    probe_duration_buckets: list[float] = Field(default_factory=lambda: list(DEFAULT_PROBE_BUCKETS))
    max_concurrent_probes: int = Field(default=64, ge=1)

    @field_validator("probe_duration_buckets")
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
    relay: RelayConfig = Field(default_factory=RelayConfig)
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
        if slo.sli.startswith("probe_") and slo.service not in services:
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
        if slo.sli == "ticket_first_response":
            buckets = config.tickets.first_response_buckets
            if slo.threshold not in buckets:
                problems.append(
                    f"{path}.threshold: {format_duration(slo.threshold)} is not a bucket boundary of "
                    f"tickets.first_response_buckets {[format_duration(b) for b in buckets]}: use one of them or add it"
                )
            if slo.channel and slo.channel not in config.tickets.channels:
                problems.append(f"{path}.channel: unknown channel {slo.channel!r}: use one of {config.tickets.channels}")
            if slo.priority and slo.priority not in config.tickets.priorities:
                problems.append(
                    f"{path}.priority: unknown priority {slo.priority!r}: use one of {config.tickets.priorities}"
                )
    problems.extend(_relay_problems(config))
    return problems


def _relay_problems(config: Config) -> list[str]:
    """Return a problem for each relay secret file that is missing or unreadable."""
    problems = []
    for name, robot in config.relay.robots.items():
        for key, path in robot.secret_paths().items():
            try:
                with open(path, encoding="utf-8") as file:
                    text = file.read().strip()
            except OSError as error:
                problems.append(f"relay.robots.{name}.{key}: cannot read {path!r}: {error.strerror}: check the path")
                continue
            if not text:
                problems.append(f"relay.robots.{name}.{key}: {path!r} is empty: write the value into the file")
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
            shown = f", got {item['input']!r}" if "input" in item and not message.startswith(("sli ", "short window")) else ""
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
