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
from datetime import date, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError,
                      ValidationInfo, field_validator, model_validator)

from .durations import format_duration, format_le, parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration)]

# Upper bound of timeouts and intervals. A longer one is a typo (or a unit
# mix-up such as y for s), and asyncio's timers reject far larger values.
MAX_TIMEOUT_SECONDS = 365 * 86400.0


def _check_timeout_range(seconds: float) -> float:
    if seconds > MAX_TIMEOUT_SECONDS:
        raise ValueError(f"{format_duration(seconds) if seconds < 1e12 else f'{seconds:.3g}s'} is longer than "
                         "the maximum of 365d for a timeout or interval: use a shorter duration such as 10s or 5m")
    return seconds


# A timeout or interval: a Duration of at most 365 days.
TimeoutDuration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_check_timeout_range)]

LABEL_VALUE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.-]*$")
LOCALES = ("en", "zh-CN")

DEFAULT_PROBE_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
DEFAULT_FIRST_RESPONSE_BUCKETS = [60.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0]
DEFAULT_RESOLUTION_BUCKETS = [3600.0, 14400.0, 28800.0, 86400.0, 172800.0, 345600.0, 604800.0, 1209600.0, 2592000.0]
# Bytes per second: 10 kB/s to 1 GB/s.
DEFAULT_TRANSFER_SPEED_BUCKETS = [1e4, 1e5, 1e6, 5e6, 1e7, 2.5e7, 5e7, 1e8, 2.5e8, 1e9]


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
            f"{value!r} is not a valid name: use letters, digits, '_', '.' or '-', starting with a letter or '_'"
        )
    return value


LabelName = Annotated[str, BeforeValidator(lambda v: _check_label_value(str(v)) if v is not None else v)]

PROMETHEUS_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _check_prometheus_label_name(name: str) -> str:
    if not PROMETHEUS_LABEL_NAME.match(name):
        raise ValueError(f"{name!r} is not a valid Prometheus label name: use letters, digits and '_'")
    return name


PrometheusLabelName = Annotated[str, BeforeValidator(lambda v: _check_prometheus_label_name(str(v)))]


TLSVersionName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]


class TLSConfig(StrictModel):
    """TLS client settings, named as in blackbox_exporter's tls_config."""

    insecure_skip_verify: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    min_version: TLSVersionName | None = None
    max_version: TLSVersionName | None = None

    @model_validator(mode="after")
    def _min_not_above_max(self) -> "TLSConfig":
        # The names sort in version order.
        if self.min_version and self.max_version and self.min_version > self.max_version:
            raise ValueError(f"min_version {self.min_version} is above max_version {self.max_version}, so no "
                             "TLS version is allowed: lower min_version or raise max_version")
        return self


# blackbox_exporter 0.23 options that slawatch does not implement. A module
# that sets one is rejected with this message instead of "unknown key", so a
# copied blackbox modules file fails loudly rather than probing differently.
UNSUPPORTED_BLACKBOX_OPTIONS = {
    "oauth2": "OAuth 2.0 client credentials are not supported: use bearer_token_file with a token refreshed outside",
    "skip_resolve_phase_with_proxy": "skip_resolve_phase_with_proxy is not supported: remove it",
    "source_ip_address": "source_ip_address is not supported: remove it",
    "dns_over_tls": "dns_over_tls is not supported: remove it",
}

# Options that blackbox_exporter 0.23 does not have either but that resemble
# its options. They are rejected with this message instead of "unknown key".
UNSUPPORTED_OTHER_OPTIONS = {
    "follow_redirects_hosts": "follow_redirects_hosts is not an option of slawatch or of blackbox_exporter 0.23: "
                              "remove it, and use follow_redirects: false to stop at the first redirect",
}

_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
# blackbox_exporter reads sizes with Go's units.Base2Bytes, where 1KB is 1024 bytes.
_SIZE_FACTORS = {"": 1, "b": 1, "kb": 1024, "kib": 1024, "mb": 1024**2, "mib": 1024**2, "gb": 1024**3,
                 "gib": 1024**3, "tb": 1024**4, "tib": 1024**4}


def parse_size(value: Any) -> int:
    """Parse a byte size such as 1048576, "512KB" or "10MB" (powers of 1024, as blackbox_exporter)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size: use bytes or a unit, for example 10MB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size {value} is negative: use 0 for no limit or a positive size")
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size: use bytes or a unit, for example 10MB")
    return int(match.group(1)) * _SIZE_FACTORS[(match.group(2) or "").lower()]


Size = Annotated[int, BeforeValidator(parse_size)]


# Go's RE2 syntax, which blackbox_exporter uses, accepts a repeated anchor such
# as "^+OK" (Debian's example pop3s_banner module); Python's re rejects it.
# A repeated anchor matches the same as the bare anchor.
_REPEATED_ANCHOR = re.compile(r"(?<!\\)([\^$])[+*?]")


def _python_regexp(pattern: str) -> str:
    """Return `pattern` in Python's re syntax, rewriting the RE2 forms that re rejects."""
    try:
        re.compile(pattern)
        return pattern
    except re.error as error:
        rewritten = _REPEATED_ANCHOR.sub(r"\1", pattern)
        try:
            re.compile(rewritten)
        except re.error:
            raise ValueError(f"{pattern!r} is not a valid regular expression: {error}") from None
        return rewritten


def _check_regexps(patterns: list[str]) -> list[str]:
    return [_python_regexp(pattern) for pattern in patterns]


Regexps = Annotated[list[str], BeforeValidator(lambda v: _check_regexps(list(v)) if isinstance(v, list) else v)]


def _reject_unsupported(data: Any) -> Any:
    if isinstance(data, dict):
        for key in data:
            if key in UNSUPPORTED_BLACKBOX_OPTIONS:
                raise ValueError(f"unsupported blackbox_exporter option {key!r}: {UNSUPPORTED_BLACKBOX_OPTIONS[key]}")
            if key in UNSUPPORTED_OTHER_OPTIONS:
                raise ValueError(f"unknown option {key!r}: {UNSUPPORTED_OTHER_OPTIONS[key]}")
    return data


def _check_status_code(code: int) -> int:
    if not 100 <= code <= 599:
        raise ValueError(f"status code {code} is out of range: use codes between 100 and 599")
    return code


# Each invalid code is reported at its own list index.
StatusCode = Annotated[int, AfterValidator(_check_status_code)]


class HeaderMatch(StrictModel):
    """One fail_if_header_(not_)matches rule, as blackbox_exporter's http_header_match_spec."""

    header: str
    regexp: str
    allow_missing: bool = False

    @field_validator("regexp")
    @classmethod
    def _valid_regexp(cls, value: str) -> str:
        return _check_regexps([value])[0]


class BasicAuth(StrictModel):
    username: str = ""
    password: SecretStr | None = None
    password_file: str | None = None

    @model_validator(mode="after")
    def _one_password(self) -> "BasicAuth":
        if self.password is not None and self.password_file:
            raise ValueError("set either password or password_file, not both")
        return self


class Authorization(StrictModel):
    """An Authorization header from Prometheus's common HTTP client config."""

    type: str = "Bearer"
    credentials: SecretStr | None = None
    credentials_file: str | None = None

    @model_validator(mode="after")
    def _one_credential(self) -> "Authorization":
        if self.credentials is not None and self.credentials_file:
            raise ValueError("set either credentials or credentials_file, not both")
        return self


class HTTPProbeConfig(StrictModel):
    """Options of the http prober, named and nested as in blackbox_exporter 0.23's `http:` block.

    `body_file` and `expected_body_size` are slawatch additions.
    """

    valid_status_codes: list[StatusCode] = Field(default_factory=list)
    valid_http_versions: list[str] = Field(default_factory=list)
    method: str = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    body_file: str | None = None
    body_size_limit: Size = 0
    # Fail unless the uncompressed body has exactly this many bytes, so that
    # probe_http_transfer_bytes_per_second measures a known object.
    expected_body_size: Size | None = None
    compression: Literal["", "gzip", "deflate", "br", "identity"] = ""
    follow_redirects: bool = True
    # blackbox_exporter 0.23's deprecated inverse of follow_redirects. When set,
    # it decides follow_redirects; a contradicting follow_redirects is an error.
    no_follow_redirects: bool | None = None
    fail_if_ssl: bool = False
    fail_if_not_ssl: bool = False
    fail_if_body_matches_regexp: Regexps = Field(default_factory=list)
    fail_if_body_not_matches_regexp: Regexps = Field(default_factory=list)
    fail_if_header_matches: list[HeaderMatch] = Field(default_factory=list)
    fail_if_header_not_matches: list[HeaderMatch] = Field(default_factory=list)
    tls_config: TLSConfig = Field(default_factory=TLSConfig)
    basic_auth: BasicAuth | None = None
    authorization: Authorization | None = None
    bearer_token: SecretStr | None = None
    bearer_token_file: str | None = None
    proxy_url: str | None = None
    # slawatch speaks HTTP/1.1 only. true (blackbox's default) is accepted
    # because it only allows HTTP/2, and a server may still reply in HTTP/1.1.
    enable_http2: bool = True
    preferred_ip_protocol: Literal["ip4", "ip6"] = "ip6"
    ip_protocol_fallback: bool = True

    @field_validator("compression")
    @classmethod
    def _known_compression(cls, value: str) -> str:
        if value == "br":
            raise ValueError("compression br is not supported because no Brotli decoder is installed: "
                             "use gzip, deflate or identity")
        return value

    _unsupported = model_validator(mode="before")(_reject_unsupported)

    @field_validator("proxy_url")
    @classmethod
    def _http_proxy(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme != "http" or not parts.hostname:
                raise ValueError(f"{value!r} is not an http:// proxy URL, for example http://proxy.internal:3128")
        return value

    @model_validator(mode="after")
    def _apply_no_follow_redirects(self) -> "HTTPProbeConfig":
        if self.no_follow_redirects is None:
            return self
        if "follow_redirects" in self.model_fields_set and self.follow_redirects == self.no_follow_redirects:
            follow, no_follow = str(self.follow_redirects).lower(), str(self.no_follow_redirects).lower()
            raise ValueError(f"follow_redirects: {follow} contradicts no_follow_redirects: {no_follow}: "
                             "remove no_follow_redirects, which blackbox_exporter deprecates, and keep "
                             "follow_redirects")
        # The model is frozen, so the resolved value is written past __setattr__.
        object.__setattr__(self, "follow_redirects", not self.no_follow_redirects)
        return self

    @model_validator(mode="after")
    def _exclusive_options(self) -> "HTTPProbeConfig":
        if self.body is not None and self.body_file:
            raise ValueError("set either body or body_file, not both")
        credentials = [name for name in ("basic_auth", "authorization", "bearer_token", "bearer_token_file")
                       if getattr(self, name)]
        if len(credentials) > 1:
            raise ValueError(f"set only one of {', '.join(credentials)}: each sets the Authorization header")
        return self


class QueryResponse(StrictModel):
    """One step of a tcp query_response dialogue: expect a regexp, send a line, or start TLS."""

    expect: str | None = None
    send: str | None = None
    starttls: bool = False

    @field_validator("expect")
    @classmethod
    def _valid_expect(cls, value: str | None) -> str | None:
        return _check_regexps([value])[0] if value is not None else None


class TCPProbeConfig(StrictModel):
    """Options of the tcp prober, named as in blackbox_exporter's `tcp:` block."""

    _unsupported = model_validator(mode="before")(_reject_unsupported)
    query_response: list[QueryResponse] = Field(default_factory=list)

    preferred_ip_protocol: Literal["ip4", "ip6"] = "ip6"
    ip_protocol_fallback: bool = True
    tls: bool = False
    tls_config: TLSConfig = Field(default_factory=TLSConfig)


class RRValidation(StrictModel):
    """Regexps over the records of one DNS response section, as blackbox_exporter's validate_*_rrs."""

    fail_if_matches_regexp: Regexps = Field(default_factory=list)
    fail_if_all_match_regexp: Regexps = Field(default_factory=list)
    fail_if_not_matches_regexp: Regexps = Field(default_factory=list)
    fail_if_none_matches_regexp: Regexps = Field(default_factory=list)


def _check_rcode(rcode: str) -> str:
    import dns.rcode

    try:
        dns.rcode.from_text(rcode)
    except Exception:
        raise ValueError(f"valid_rcodes entry {rcode!r} is unknown: use names such as NOERROR, NXDOMAIN") from None
    return rcode


# Each unknown rcode is reported at its own list index.
RCode = Annotated[str, AfterValidator(_check_rcode)]


class DNSProbeConfig(StrictModel):
    """Options of the dns prober, named as in blackbox_exporter's `dns:` block."""

    _unsupported = model_validator(mode="before")(_reject_unsupported)
    preferred_ip_protocol: Literal["ip4", "ip6"] = "ip6"
    ip_protocol_fallback: bool = True
    transport_protocol: Literal["udp", "tcp"] = "udp"
    query_name: str = ""
    query_type: str = "ANY"
    query_class: str = "IN"
    recursion_desired: bool = True
    valid_rcodes: list[RCode] = Field(default_factory=lambda: ["NOERROR"])
    validate_answer_rrs: RRValidation = Field(default_factory=RRValidation)
    validate_authority_rrs: RRValidation = Field(default_factory=RRValidation)
    validate_additional_rrs: RRValidation = Field(default_factory=RRValidation)

    @field_validator("query_type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        import dns.rdatatype

        try:
            dns.rdatatype.from_text(value)
        except Exception:
            raise ValueError(f"query_type {value!r} is unknown: use a name such as A, AAAA, MX or SOA") from None
        return value

    @field_validator("query_class")
    @classmethod
    def _known_class(cls, value: str) -> str:
        import dns.rdataclass

        try:
            dns.rdataclass.from_text(value)
        except Exception:
            raise ValueError(f"query_class {value!r} is unknown: use a name such as IN or CH") from None
        return value


class ICMPProbeConfig(StrictModel):
    """Options of the icmp prober, named as in blackbox_exporter's `icmp:` block."""

    _unsupported = model_validator(mode="before")(_reject_unsupported)
    preferred_ip_protocol: Literal["ip4", "ip6"] = "ip6"
    ip_protocol_fallback: bool = True
    payload_size: int = Field(default=0, ge=0, le=65000)
    ttl: int | None = Field(default=None, ge=0, le=255)
    # Setting DF needs raw sockets in blackbox too; slawatch accepts only the default.
    dont_fragment: bool = False

    @field_validator("dont_fragment")
    @classmethod
    def _fragmenting_only(cls, value: bool) -> bool:
        if value:
            raise ValueError("dont_fragment: true is not supported, because slawatch does not set the IP "
                             "don't-fragment flag: remove dont_fragment or set it to false")
        return value


class GRPCProbeConfig(StrictModel):
    """Options of the grpc prober, named as in blackbox_exporter's `grpc:` block."""

    _unsupported = model_validator(mode="before")(_reject_unsupported)
    service: str = ""
    preferred_ip_protocol: Literal["ip4", "ip6"] = "ip6"
    ip_protocol_fallback: bool = True
    tls: bool = False
    tls_config: TLSConfig = Field(default_factory=TLSConfig)

    @field_validator("tls_config")
    @classmethod
    def _no_version_limits(cls, tls: TLSConfig) -> TLSConfig:
        # grpc.ssl_channel_credentials takes certificates only, so a version
        # limit would be silently ignored.
        limits = [key for key in ("min_version", "max_version") if getattr(tls, key)]
        if limits:
            verb, pronoun = ("is", "it") if len(limits) == 1 else ("are", "them")
            raise ValueError(f"{' and '.join(limits)} {verb} not supported by the grpc prober, because the Python "
                             f"gRPC client cannot limit TLS versions: remove {pronoun}")
        return tls


class Module(StrictModel):
    """A probe module in blackbox_exporter's format."""

    prober: Literal["http", "tcp", "dns", "icmp", "grpc"]
    timeout: TimeoutDuration = 10.0
    http: HTTPProbeConfig = Field(default_factory=HTTPProbeConfig)
    tcp: TCPProbeConfig = Field(default_factory=TCPProbeConfig)
    dns: DNSProbeConfig = Field(default_factory=DNSProbeConfig)
    icmp: ICMPProbeConfig = Field(default_factory=ICMPProbeConfig)
    grpc: GRPCProbeConfig = Field(default_factory=GRPCProbeConfig)

    @model_validator(mode="after")
    def _dns_query_name(self) -> "Module":
        if self.prober == "dns" and not self.dns.query_name:
            raise ValueError("the dns prober needs dns.query_name, for example query_name: example.com")
        return self

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
    interval: TimeoutDuration = 30.0
    public: bool = True

    @field_validator("interval")
    @classmethod
    def _interval_floor(cls, value: float) -> float:
        if value < 1:
            raise ValueError(f"interval {format_duration(value)} is too short: use 1s or more")
        return value


# Keys of a calendar's `hours`, in the order of date.weekday().
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _check_weekday(value: Any) -> str:
    if value not in WEEKDAYS:
        raise ValueError(f"unknown day {value!r}: use {', '.join(WEEKDAYS[:-1])} or {WEEKDAYS[-1]}")
    return value


def _check_time_range(text: str) -> str:
    from .tickets.calendar import parse_range

    parse_range(text)
    return text


def _check_no_overlap(texts: list[str]) -> list[str]:
    from .tickets.calendar import check_no_overlap

    return check_no_overlap(texts)


Weekday = Annotated[str, BeforeValidator(_check_weekday)]
# One range of local opening hours, "HH:MM-HH:MM". Each invalid range is reported at its own list index.
TimeRange = Annotated[str, AfterValidator(_check_time_range)]
# The ranges of one day, which may not overlap because overlapping time would count twice.
DayRanges = Annotated[list[TimeRange], AfterValidator(_check_no_overlap)]
TicketMeasure = Literal["first_response", "first_resolution", "full_resolution", "requester_wait"]


class Calendar(StrictModel):
    """Business hours: an IANA time zone, weekly ranges, holidays and make-up working days."""

    timezone: str = "UTC"
    always_open: bool = False
    hours: dict[Weekday, DayRanges] = Field(default_factory=dict)
    holidays: list[date] = Field(default_factory=list)
    workdays: list[date] = Field(default_factory=list, description="make-up working days")
    workday_hours: DayRanges | None = None
    holiday_source: Literal["none", "china"] = "none"
    unknown_dates: Literal["weekly", "closed"] = "weekly"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as Asia/Shanghai or UTC") from None
        return value

    @field_validator("workdays")
    @classmethod
    def _not_also_holidays(cls, workdays: list[date], info: ValidationInfo) -> list[date]:
        both = sorted(set(workdays) & set(info.data.get("holidays", [])))
        if both:
            dates = ", ".join(day.isoformat() for day in both)
            verb, pronoun = ("is", "it") if len(both) == 1 else ("are", "each")
            raise ValueError(f"{dates} {verb} also listed in holidays: a date is either a holiday or a make-up "
                             f"working day, so remove {pronoun} from one of the two lists")
        return workdays

    @model_validator(mode="after")
    def _has_hours(self) -> "Calendar":
        if not self.always_open and not any(self.hours.values()):
            raise ValueError("no opening hours: add hours (for example mon: [09:00-18:00]) or set always_open: true")
        return self


class TicketSLA(StrictModel):
    """A ticket latency target; its threshold becomes a histogram bucket boundary."""

    name: LabelName
    measure: TicketMeasure = "first_response"
    threshold: Duration
    channels: list[LabelName] = Field(default_factory=list, description="empty: every channel")
    priorities: list[LabelName] = Field(default_factory=list, description="empty: every priority")

    @field_validator("threshold")
    @classmethod
    def _positive_threshold(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"threshold {format_duration(value)} must be greater than 0s because it becomes a "
                             "histogram bucket bound: use a latency such as 1h")
        return value


class TicketWebhook(StrictModel):
    """HMAC-SHA256 verification of POST /api/v1/ticket-events."""

    secret_file: str | None = None
    secret_env: str | None = None
    max_age: TimeoutDuration = 300.0
    # Events dated more than this after the receiver's clock are refused (a wrong clock or zone offset).
    max_future: TimeoutDuration = 300.0
    # Signing secret of a Zendesk webhook that posts to /api/v1/ticket-events/zendesk.
    zendesk_secret_file: str | None = None


class RTSource(StrictModel):
    """A Request Tracker 5 instance polled through its REST2 API."""

    url: str = Field(description="base URL, for example https://rt.example.com (REST2 is under /REST/2.0/)")
    user: str | None = None
    password_file: str | None = None
    token_file: str | None = Field(default=None, description="REST2 auth token (RT::Authen::Token)")
    interval: TimeoutDuration = 60.0
    page_size: int = Field(default=50, ge=1, le=100)
    query: str = Field(default="", description="extra TicketSQL, ANDed with the LastUpdated cursor")
    start: datetime | None = Field(default=None, description="first LastUpdated to read when no cursor is stored")
    channel: LabelName = "email"
    bot_users: list[str] = Field(default_factory=list)
    # RT 5's default lifecycle; a value "removed:<reason>" removes the ticket.
    status_map: dict[str, str] = Field(default_factory=lambda: {
        "new": "new", "open": "open", "stalled": "pending", "resolved": "solved", "rejected": "closed",
        "deleted": "removed:deleted"})
    # The lowest RT priority number of each priority label (RT 5's Low/Medium/High are 0/50/100).
    priority_map: dict[int, LabelName] = Field(default_factory=lambda: {0: "low", 50: "normal", 100: "high"})

    @model_validator(mode="after")
    def _one_credential(self) -> "RTSource":
        if (self.password_file is not None) == (self.token_file is not None):
            raise ValueError("set exactly one of password_file (with user) or token_file")
        if self.password_file is not None and not self.user:
            raise ValueError("password_file needs user: the RT user name")
        return self


class JiraSource(StrictModel):
    """A Jira Service Management site polled through the Jira Cloud platform REST API v3."""

    url: str = Field(description="site URL, for example https://example.atlassian.net")
    user: str = Field(description="the account's email address")
    token_file: str = Field(description="file with an Atlassian API token")
    jql: str = Field(default="", description="JQL that selects the service-desk issues, for example project = SUP")
    interval: TimeoutDuration = 60.0
    page_size: int = Field(default=50, ge=1, le=100)
    channel: LabelName = "email"
    # Status names of the default service-desk workflows; a value "removed:<reason>" removes the ticket.
    status_map: dict[str, str] = Field(default_factory=lambda: {
        "Open": "open", "Waiting for support": "open", "In Progress": "open", "Waiting for customer": "pending",
        "Pending": "on_hold", "Resolved": "solved", "Done": "solved", "Closed": "closed", "Canceled": "closed"})
    priority_map: dict[str, LabelName] = Field(default_factory=lambda: {
        "Lowest": "low", "Low": "low", "Medium": "normal", "High": "high", "Highest": "urgent"})
    default_priority: LabelName = "normal"


class ZammadSource(StrictModel):
    """A Zammad instance polled through its REST API."""

    url: str = Field(description="base URL, for example https://zammad.example.com (the API is under /api/v1/)")
    token_file: str = Field(description="file with a Zammad access token")
    query: str = Field(default="*", description="ticket search query")
    interval: TimeoutDuration = 60.0
    page_size: int = Field(default=50, ge=1, le=100)
    max_pages: int = Field(default=20, ge=1)
    # Zammad's default states; a value "removed:<reason>" removes the ticket.
    status_map: dict[str, str] = Field(default_factory=lambda: {
        "new": "new", "open": "open", "pending reminder": "on_hold", "pending close": "solved", "closed": "closed",
        "merged": "removed:merged", "removed": "removed:deleted"})
    priority_map: dict[str, LabelName] = Field(default_factory=lambda: {
        "1 low": "low", "2 normal": "normal", "3 high": "high"})
    default_priority: LabelName = "normal"
    # Article type of the ticket's first message -> channel label.
    channel_map: dict[str, LabelName] = Field(default_factory=lambda: {
        "email": "email", "phone": "phone", "chat": "chat", "web": "email"})
    default_channel: LabelName = "email"


class ZendeskSource(StrictModel):
    """A Zendesk Support account polled through the cursor-based incremental ticket export."""

    url: str = Field(description="account URL, for example https://example.zendesk.com (the API is under /api/v2/)")
    email: str | None = Field(default=None, description="email address of the agent who owns the API token")
    token_file: str | None = Field(default=None, description="file with a Zendesk API token, sent as {email}/token")
    oauth_token_file: str | None = Field(default=None, description="file with an OAuth access token (Bearer)")
    interval: TimeoutDuration = 60.0
    # Zendesk documents per_page on the incremental exports as at most 1,000 (its default).
    page_size: int = Field(default=100, ge=1, le=1000)
    max_pages: int = Field(default=10, ge=1)
    start: datetime | None = Field(default=None, description="start_time of the first export when no cursor is stored")
    bot_users: list[int] = Field(default_factory=list, description="Zendesk user ids whose comments are author bot")
    # Zendesk's ticket statuses, and "deleted" for a deleted ticket in the incremental export.
    status_map: dict[str, str] = Field(default_factory=lambda: {
        "new": "new", "open": "open", "pending": "pending", "hold": "on_hold", "solved": "solved",
        "closed": "closed", "deleted": "removed:deleted"})
    priority_map: dict[str, LabelName] = Field(default_factory=lambda: {
        "low": "low", "normal": "normal", "high": "high", "urgent": "urgent"})
    default_priority: LabelName = "normal"
    # Via channel of the ticket (a via type, or a via id written as a string) -> channel label.
    channel_map: dict[str, LabelName] = Field(default_factory=lambda: {
        "mail": "email", "email": "email", "web": "email", "web_form": "email", "chat": "chat",
        "native_messaging": "chat", "voice": "phone"})
    default_channel: LabelName = "email"

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ValueError(f"{value!r} is not an http(s) URL without a query: use the account URL, "
                             "for example https://example.zendesk.com")
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> "ZendeskSource":
        if (self.token_file is not None) == (self.oauth_token_file is not None):
            raise ValueError("set exactly one of token_file (with email) or oauth_token_file")
        if self.token_file is not None and not self.email:
            raise ValueError("token_file needs email: the email address of the agent who owns the API token")
        if self.oauth_token_file is not None and self.email:
            raise ValueError("email is used only with token_file: remove it, because an OAuth token identifies its user")
        return self


class TicketSources(StrictModel):
    rt: RTSource | None = None
    jira: JiraSource | None = None
    zammad: ZammadSource | None = None
    zendesk: ZendeskSource | None = None


class TicketsConfig(StrictModel):
    database: str = "slawatch-tickets.db"
    channels: list[LabelName] = Field(default_factory=lambda: ["phone", "email", "chat", "forum"])
    priorities: list[LabelName] = Field(default_factory=lambda: ["low", "normal", "high", "urgent"])
    first_response_buckets: list[float] = Field(default_factory=lambda: list(DEFAULT_FIRST_RESPONSE_BUCKETS))
    resolution_buckets: list[float] = Field(default_factory=lambda: list(DEFAULT_RESOLUTION_BUCKETS))
    calendars: dict[LabelName, Calendar] = Field(default_factory=dict)
    business_calendar: str | None = None
    priority_calendars: dict[LabelName, str] = Field(default_factory=dict)
    teams: dict[str, LabelName] = Field(default_factory=dict, description="helpdesk group or queue -> team label")
    default_team: LabelName = "support"
    agent_created: Literal["answered_at_creation", "next_reply", "exclude"] = "answered_at_creation"
    bot_first_response: bool = False
    slas: list[TicketSLA] = Field(
        default_factory=lambda: [TicketSLA(name="first_response", measure="first_response", threshold=3600.0)])
    webhook: TicketWebhook = Field(default_factory=TicketWebhook)
    sources: TicketSources = Field(default_factory=TicketSources)

    @field_validator("first_response_buckets", "resolution_buckets")
    @classmethod
    def _sorted_buckets(cls, buckets: list[float]) -> list[float]:
        return _check_buckets(buckets)

    @field_validator("channels", "priorities")
    @classmethod
    def _unique_names(cls, names: list[str], info: ValidationInfo) -> list[str]:
        kind = {"channels": "channel", "priorities": "priority"}[info.field_name]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            listed = ", ".join(repr(name) for name in duplicates)
            raise ValueError(f"duplicate {kind} {listed}: list each {kind} once")
        return names

    def buckets_for(self, measure: str, extra: list[float] = ()) -> list[float]:
        """Return a measure's bucket bounds: the configured ones plus every SLA threshold on it."""
        base = self.first_response_buckets if measure == "first_response" else self.resolution_buckets
        thresholds = [sla.threshold for sla in self.slas if sla.measure == measure]
        return sorted(set(base) | set(thresholds) | set(extra))


def _check_allow_entry(entry: str) -> str:
    if not entry.strip():
        raise ValueError("empty entry: write a host name, an IP address or a CIDR range, or remove the entry")
    if entry != entry.strip() or any(c.isspace() for c in entry):
        raise ValueError(f"{entry!r} contains whitespace, so it never matches a host: remove the spaces")
    if any(c in entry for c in "*?"):
        raise ValueError(f"{entry!r} is a wildcard pattern, but probe.allow matches exact host names only: "
                         "list each host name, or a CIDR range that contains the hosts' addresses")
    if "/" in entry:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not a valid CIDR range, for example 10.0.0.0/8") from None
    return entry


# Each invalid entry is reported at its own list index.
AllowEntry = Annotated[str, AfterValidator(_check_allow_entry)]


class ProbeSecurity(StrictModel):
    """The hosts that `/probe` may reach: host names, IP addresses or CIDR ranges."""

    allow: list[AllowEntry] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128", "localhost"])
    allow_configured_targets: bool = True
    # When true, /probe accepts only a target string that equals a configured
    # target's url, checked before any name resolution.
    only_configured_targets: bool = False


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
    timeout: TimeoutDuration = 10.0

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
    # Adds a `location` label to every /probe metric. Off by default because
    # blackbox_exporter dashboards and the compatibility test expect its labels;
    # /probe always returns probe_location_info{location}.
    probe_location_label: bool = False
    transfer_speed_buckets: list[float] = Field(default_factory=lambda: list(DEFAULT_TRANSFER_SPEED_BUCKETS))

    @field_validator("probe_duration_buckets", "transfer_speed_buckets")
    @classmethod
    def _sorted_buckets(cls, buckets: list[float]) -> list[float]:
        return _check_buckets(buckets)


STATUS_STATES = ("operational", "degraded", "partial_outage", "major_outage")
LocalizedText = dict[Literal["en", "zh-CN"], str]


class StatusThresholds(StrictModel):
    """Thresholds that map recent probe results of a public service to its state on the status page.

    The share of failed probes over `window` picks the worst state whose
    ratio it reaches. `degraded_latency` also marks a service degraded when
    the mean latency of its successful probes in the window exceeds it.
    """

    window: Duration = 10 * 60.0
    degraded_failure_ratio: float = Field(default=0.05, gt=0, le=1)
    partial_outage_failure_ratio: float = Field(default=0.25, gt=0, le=1)
    major_outage_failure_ratio: float = Field(default=0.75, gt=0, le=1)
    degraded_latency: Duration | None = None

    @model_validator(mode="after")
    def _ratios_ascending(self) -> "StatusThresholds":
        ratios = (self.degraded_failure_ratio, self.partial_outage_failure_ratio, self.major_outage_failure_ratio)
        if not ratios[0] < ratios[1] < ratios[2]:
            raise ValueError(
                f"failure ratios must rise from degraded to major outage, got {list(ratios)}: "
                "for example 0.05, 0.25, 0.75"
            )
        return self


class StatusService(StrictModel):
    """Public text of one service on the status page."""

    name: LocalizedText = Field(default_factory=dict)
    description: LocalizedText = Field(default_factory=dict)


class StatusConfig(StrictModel):
    """The public status page and its daily roll-ups (`/status`, `/api/v1/status`)."""

    enabled: bool = True
    # Default: slawatch-status.db in the folder of tickets.database.
    database: str | None = None
    timezone: str = "UTC"
    retention_days: int = Field(default=90, ge=1, le=3660)
    title: LocalizedText = Field(default_factory=dict)
    accept_language: bool = True
    thresholds: StatusThresholds = Field(default_factory=StatusThresholds)
    services: dict[LabelName, StatusService] = Field(default_factory=dict)
    # State that an open alert gives its service, by the alert's severity label.
    alert_states: dict[str, Literal["degraded", "partial_outage", "major_outage"]] = Field(
        default_factory=lambda: {"page": "partial_outage", "ticket": "degraded"})
    # Public incident titles by alertname; other alerts get a generic title.
    alert_titles: dict[str, LocalizedText] = Field(default_factory=dict)
    announce_token_file: str | None = None
    announce_token_env: str = "SLAWATCH_ANNOUNCE_TOKEN"

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as UTC or Asia/Shanghai") from None
        return value

    def database_path(self, tickets_database: str) -> str:
        if self.database:
            return self.database
        return str(Path(tickets_database).with_name("slawatch-status.db"))


class Config(StrictModel):
    global_: GlobalConfig = Field(default_factory=GlobalConfig, alias="global")
    modules: dict[str, Module] = Field(default_factory=dict)
    targets: list[Target] = Field(default_factory=list)
    probe: ProbeSecurity = Field(default_factory=ProbeSecurity)
    tickets: TicketsConfig = Field(default_factory=TicketsConfig)
    alerting: AlertingConfig = Field(default_factory=AlertingConfig)
    relay: RelayConfig = Field(default_factory=RelayConfig)
    slos: list[SLO] = Field(default_factory=list)
    status: StatusConfig = Field(default_factory=StatusConfig)

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
    problems.extend(_status_checks(config))
    problems += _ticket_checks(config.tickets)
    problems.extend(_relay_problems(config))
    return problems


def _status_checks(config: Config) -> list[str]:
    public = sorted({t.service for t in config.targets if t.public})
    problems = []
    for service in config.status.services:
        if service not in public:
            problems.append(
                f"status.services.{service}: no public target has service {service!r}: "
                f"use one of {public} or set public: true on its target"
            )
    return problems


def _ticket_checks(tickets: TicketsConfig) -> list[str]:
    """Return problems in tickets: calendars, priorities and SLAs that refer to each other."""
    problems = []
    calendars = sorted(tickets.calendars) + ["24x7"]
    if tickets.business_calendar is not None and tickets.business_calendar not in calendars:
        problems.append(f"tickets.business_calendar: unknown calendar {tickets.business_calendar!r}: "
                        f"use one of {calendars} or add it under tickets.calendars")
    for priority, name in tickets.priority_calendars.items():
        if priority not in tickets.priorities:
            problems.append(f"tickets.priority_calendars.{priority}: unknown priority: use one of {tickets.priorities}")
        if name not in calendars:
            problems.append(f"tickets.priority_calendars.{priority}: unknown calendar {name!r}: use one of {calendars}")
    names = set()
    for index, sla in enumerate(tickets.slas):
        path = f"tickets.slas[{index}]"
        if sla.name in names:
            problems.append(f"{path}.name: duplicate SLA name {sla.name!r}: give each SLA a unique name")
        names.add(sla.name)
        for channel in sla.channels:
            if channel not in tickets.channels:
                problems.append(f"{path}.channels: unknown channel {channel!r}: use one of {tickets.channels}")
        for priority in sla.priorities:
            if priority not in tickets.priorities:
                problems.append(f"{path}.priorities: unknown priority {priority!r}: use one of {tickets.priorities}")
    for name in ("rt", "jira", "zammad", "zendesk"):
        source = getattr(tickets.sources, name)
        if source is not None:
            problems.extend(_source_checks(f"tickets.sources.{name}", source, tickets))
    if tickets.webhook.secret_file and tickets.webhook.secret_env:
        problems.append("tickets.webhook: both secret_file and secret_env are set: keep one")
    return problems


# Ticket statuses that a helpdesk source's status_map may map to.
SOURCE_STATUSES = ["new", "open", "pending", "on_hold", "solved", "closed", "removed:merged", "removed:deleted",
                   "removed:spam"]


def _source_checks(path: str, source: BaseModel, tickets: TicketsConfig) -> list[str]:
    """Return problems in one helpdesk source's status, priority and channel mappings."""
    problems = []
    for key, status in source.status_map.items():
        if status not in SOURCE_STATUSES:
            problems.append(f"{path}.status_map.{key}: unknown status {status!r}: use one of {SOURCE_STATUSES}")
    for key, priority in source.priority_map.items():
        if priority not in tickets.priorities:
            problems.append(f"{path}.priority_map.{key}: unknown priority {priority!r}: "
                            f"use one of {tickets.priorities}")
    default_priority = getattr(source, "default_priority", None)
    if default_priority is not None and default_priority not in tickets.priorities:
        problems.append(f"{path}.default_priority: unknown priority {default_priority!r}: "
                        f"use one of {tickets.priorities}")

    channels = {"channel": getattr(source, "channel", None), "default_channel": getattr(source, "default_channel", None)}
    channels.update({f"channel_map.{key}": value for key, value in getattr(source, "channel_map", {}).items()})
    for key, channel in channels.items():
        if channel is not None and channel not in tickets.channels:
            problems.append(f"{path}.{key}: unknown channel {channel!r}: use one of {tickets.channels}")
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


_HOST_FIX = ("use a name of ASCII letters, digits, hyphens and dots with labels of 1 to 63 characters, "
             "an internationalised name, or an IP address")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")


def host_problem(host: str) -> str | None:
    """Return why `host` cannot be resolved as a name or used as an address, or None if it can.

    The resolver takes a name only after encoding it with the IDNA codec, as
    getaddrinfo() does; a name that codec rejects could never be probed.
    """
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare.split("%", 1)[0] if ":" in bare else bare)
        return None
    except ValueError:
        pass
    if _CONTROL_OR_SPACE.search(bare):
        return f"host {host!r} contains a space or control character: {_HOST_FIX}"
    try:
        bare.encode("idna")
    except UnicodeError as error:
        detail = re.sub(r"^.*\((?:UnicodeError: )?(.*)\)$", r"\1", str(error))
        return f"host {host!r} is not a valid DNS name ({detail}): {_HOST_FIX}"
    return None


def check_target(url: str, prober: str) -> str | None:
    """Return why `url` is not a valid target for `prober`, or None if it is."""
    problem = _check_target_form(url, prober)
    if problem:
        return problem
    if prober == "http":
        host = urlsplit(url if "://" in url else f"http://{url}").hostname or ""
    elif prober == "icmp" or (prober == "dns" and split_host_port(url)[1] is None):
        host = url
    else:
        host = split_host_port(url)[0]
    problem = host_problem(host)
    return f"{url!r}: {problem}" if problem else None


def _check_target_form(url: str, prober: str) -> str | None:
    if prober == "http":
        # The prober percent-encodes spaces and control characters in the path and query, not in the host.
        authority = re.split(r"[/?#]", url.partition("://")[2] if "://" in url else url, maxsplit=1)[0]
        if _CONTROL_OR_SPACE.search(authority):
            return (f"{url!r} has a space or control character before the path: remove it, and percent-encode "
                    "the ones the path needs")
        try:
            parts = urlsplit(url if "://" in url else f"http://{url}")
        except ValueError as error:
            return f"{url!r} is not a valid URL ({error}): use a URL like https://example.com/health"
        if parts.scheme not in ("http", "https"):
            return f"{url!r} has scheme {parts.scheme!r}: the http prober takes http:// or https:// URLs"
        if not parts.hostname:
            return f"{url!r} has no host: use a URL like https://example.com/health"
        try:
            parts.port
        except ValueError:
            return f"{url!r} has an invalid port: use a number between 1 and 65535"
        return None

    if prober == "icmp" or (prober == "dns" and split_host_port(url)[1] is None):
        # An icmp target is a bare host; a dns target without a port means port 53, as in blackbox_exporter.
        if not url or any(c in url for c in "/ @"):
            return f"{url!r} is not a host: use a name or address such as example.com, 127.0.0.1 or ::1"
        return None

    host, port = split_host_port(url)
    if not host or port is None or any(c in host for c in "/ @"):
        hint = f" (drop the scheme: {url.split('://', 1)[1]})" if "://" in url else ""
        return (f"{url!r} is not host:port{hint}: the {prober} prober takes targets like example.com:443 "
                "or [::1]:22")
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
        if part == "[key]":
            continue  # pydantic's marker for an invalid mapping key: the key itself is the last part
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            name = {"global_": "global", "for_": "for"}.get(str(part), str(part))
            path += f".{name}" if path else name
    return path or "(top level)"


def _format_value(value: Any) -> str:
    """Return a value as the error shows it: booleans and dates as YAML writes them, anything else as repr()."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return repr(value)


def _names_value(message: str, value: Any) -> bool:
    """Return whether `message` already shows `value`, or for a list one of its items."""
    candidates = [value, *value] if isinstance(value, list) else [value]
    for item in candidates:
        if isinstance(item, (dict, list)):
            continue
        if repr(item) in message or _format_value(item) in message:
            return True
        text = str(item)
        if text and re.search(rf"(?<![\w.]){re.escape(text)}(?![\w.])", message):
            return True
    return False


def _list_problem(loc: tuple[Any, ...], value: Any) -> str:
    """Return the message for a scalar written where a list belongs, with the list to write instead."""
    if isinstance(value, dict):
        return f"expected a list, got {value!r}"
    if value is None:
        return "expected a list, got an empty value: write the items as a list, or [] for none"
    if loc and loc[-1] in ("holidays", "workdays"):
        example = value.isoformat() if isinstance(value, date) else "2025-10-01"
        return f"expected a list of dates such as [{example}], got {_format_value(value)}"
    written = yaml.safe_dump([value], default_flow_style=True, allow_unicode=True).strip()
    return f"expected a list, got {_format_value(value)}: write it as a list: {written}"


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
        elif kind == "list_type":
            problems.append(f"{path}: {_list_problem(loc, item.get('input'))}")
        elif fix:
            problems.append(f"{path}: {fix}, got {_format_value(item.get('input'))}")
        else:
            # Showing a whole mapping, a query that the message already quotes, or a value that
            # the message already names adds only noise.
            quoted = message.startswith(("sli ", "short window", "query ", "unsupported blackbox_exporter option",
                                         "set ")) or isinstance(item.get("input"), dict)
            if kind == "value_error" and "input" in item and _names_value(message, item["input"]):
                quoted = True
            shown = f", got {_format_value(item['input'])}" if "input" in item and not quoted else ""
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
