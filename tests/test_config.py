from __future__ import annotations

import copy
from pathlib import Path

import pytest

from slawatch.config import ConfigError, load_config, parse_config
from slawatch.durations import format_duration, format_le, parse_duration

BASE = {
    "modules": {"http_2xx": {"prober": "http", "timeout": "5s"}, "tcp_connect": {"prober": "tcp"}},
    "targets": [{"service": "web", "url": "http://127.0.0.1:8080/", "module": "http_2xx", "interval": "30s"}],
    "slos": [{"name": "web-latency", "service": "web", "sli": "probe_latency", "threshold": "1s", "objective": 99}],
}


def with_change(path: list, value) -> dict:
    data = copy.deepcopy(BASE)
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


BAD_CONFIGS = [
    # (change, expected key path, expected words of the fix)
    (["targets", 0, "colour"], "blue", "targets[0].colour", "unknown or unsupported key"),
    (["targets", 0, "url"], KeyError, "targets[0].url", "required key is missing"),
    (["targets", 0, "interval"], "soon", "targets[0].interval", "like 30s"),
    (["targets", 0, "interval"], "3s", "targets[0].interval", "raise the interval"),
    (["targets", 0, "module"], "icmp", "targets[0].module", "unknown module 'icmp'"),
    (["targets", 0, "url"], "ftp://127.0.0.1/", "targets[0].url", "takes http:// or https://"),
    (["targets", 0, "url"], "http://[::1", "targets[0].url", "is not a valid URL"),
    (["targets", 0], {"service": "db", "url": "tcp://127.0.0.1:5432", "module": "tcp_connect"},
     "targets[0].url", "drop the scheme: 127.0.0.1:5432"),
    (["targets", 0, "service"], "my service", "targets[0].service", "not a valid name"),
    (["modules", "http_2xx", "prober"], "smtp", "modules.http_2xx.prober", "must be 'http', 'tcp', 'dns', 'icmp' or 'grpc'"),
    (["modules", "http_2xx", "timeout"], True, "modules.http_2xx.timeout", "invalid duration"),
    (["modules", "http_2xx", "http"], {"fail_if_body_matches_regexps": ["x"]},
     "modules.http_2xx.http.fail_if_body_matches_regexps", "unknown or unsupported key"),
    (["modules", "http_2xx", "http"], {"oauth2": {"client_id": "x"}},
     "modules.http_2xx.http", "unsupported blackbox_exporter option 'oauth2'"),
    (["modules", "http_2xx", "http"], {"body_size_limit": "ten"}, "modules.http_2xx.http.body_size_limit", "not a size"),
    (["modules", "http_2xx", "http"], {"fail_if_body_matches_regexp": ["("]},
     "modules.http_2xx.http.fail_if_body_matches_regexp", "not a valid regular expression"),
    (["modules", "http_2xx", "http"], {"bearer_token": "a", "bearer_token_file": "/t"},
     "modules.http_2xx.http", "set only one of bearer_token, bearer_token_file"),
    (["modules", "http_2xx", "http"], {"compression": "br"}, "modules.http_2xx.http.compression",
     "no Brotli decoder"),
    (["slos", 0, "threshold"], "750ms", "slos[0].threshold", "not a bucket boundary"),
    (["slos", 0, "threshold"], KeyError, "slos[0]", "needs a threshold"),
    (["slos", 0, "objective"], 100, "slos[0].objective", "must be less than 100, got 100"),
    (["slos", 0, "objective"], "high", "slos[0].objective", "expected a number"),
    (["slos", 0, "service"], "shop", "slos[0].service", "no target has service 'shop'"),
    (["slos", 0, "sli"], "uptime", "slos[0].sli", "probe_availability"),
    (["global"], {"locale": "fr"}, "global.locale", "'en' or 'zh-CN'"),
    (["tickets"], {"first_response_buckets": [600, 60]}, "tickets.first_response_buckets", "sorted ascending"),
]


@pytest.mark.parametrize(("path", "value", "key_path", "fix"), BAD_CONFIGS)
def test_bad_config_names_key_and_fix(path, value, key_path, fix):
    with pytest.raises(ConfigError) as caught:
        parse_config(with_change(path, value), "slawatch.yml")
    message = str(caught.value)
    assert message.startswith("slawatch.yml: invalid config")
    assert f"{key_path}:" in message or f"{key_path}." in message, message
    assert fix in message, message


def test_base_config_is_valid():
    config = parse_config(copy.deepcopy(BASE))
    assert config.targets[0].interval == 30.0
    assert config.slos[0].threshold == 1.0


def test_ticket_threshold_must_be_bucket():
    data = copy.deepcopy(BASE)
    data["slos"] = [{"name": "fr", "service": "support", "sli": "ticket_first_response", "threshold": "45m",
                     "objective": 95}]
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert "slos[0].threshold: 45m is not a bucket boundary of tickets.first_response_buckets" in str(caught.value)


def test_embedded_default_config_loads():
    config = load_config(None)
    services = {target.service for target in config.targets}
    assert services == {"prometheus", "alertmanager", "slawatch"}
    objectives = {slo.sli: slo.objective for slo in config.slos}
    assert objectives["probe_availability"] == 95
    assert objectives["ticket_first_response"] == 95
    first_response = next(slo for slo in config.slos if slo.sli == "ticket_first_response")
    assert first_response.threshold == 3600


def test_yaml_syntax_error_names_line(tmp_path: Path):
    path = tmp_path / "broken.yml"
    path.write_text("targets:\n  - service: web\n   url: x\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value)
    assert "line 3" in str(caught.value)


def test_missing_file_is_reported(tmp_path: Path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.yml")
    assert "cannot read the file" in str(caught.value)


def test_blackbox_modules_file_loads():
    data = {
        "modules": {
            "http_2xx": {"prober": "http", "timeout": "5s",
                         "http": {"valid_status_codes": [200, 204], "method": "GET",
                                  "preferred_ip_protocol": "ip4", "fail_if_not_ssl": False,
                                  "headers": {"Accept": "text/html"},
                                  "tls_config": {"insecure_skip_verify": False}}},
            "tcp_connect": {"prober": "tcp", "timeout": "5s"},
        }
    }
    config = parse_config(data)
    assert config.modules["http_2xx"].http.valid_status_codes == [200, 204]
    assert config.modules["http_2xx"].http.preferred_ip_protocol == "ip4"


@pytest.mark.parametrize(("text", "seconds"), [("15s", 15), ("1m30s", 90), ("1h", 3600), ("30d", 2592000),
                                               ("250ms", 0.25), (5, 5.0)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "-1s", "1x", "s"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_format_helpers():
    assert format_duration(90) == "1m30s"
    assert format_duration(86400 * 3) == "3d"
    assert format_le(1) == "1.0"
    assert format_le(3600) == "3600.0"


SOURCE_PROBLEMS = [
    # (source config, expected message)
    ({"rt": {"url": "http://127.0.0.1:1", "token_file": "t", "status_map": {"stalled": "frozen"}}},
     "tickets.sources.rt.status_map.stalled: unknown status 'frozen'"),
    ({"rt": {"url": "http://127.0.0.1:1", "token_file": "t", "channel": "fax"}},
     "tickets.sources.rt.channel: unknown channel 'fax'"),
    ({"jira": {"url": "http://127.0.0.1:1", "user": "a@example.org", "token_file": "t", "default_priority": "p9"}},
     "tickets.sources.jira.default_priority: unknown priority 'p9'"),
    ({"zammad": {"url": "http://127.0.0.1:1", "token_file": "t", "default_channel": "fax"}},
     "tickets.sources.zammad.default_channel: unknown channel 'fax'"),
    ({"zammad": {"url": "http://127.0.0.1:1", "token_file": "t", "priority_map": {"3 high": "p0"}}},
     "tickets.sources.zammad.priority_map.3 high: unknown priority 'p0'"),
    ({"zendesk": {"url": "http://127.0.0.1:1", "oauth_token_file": "t", "channel_map": {"web": "fax"}}},
     "tickets.sources.zendesk.channel_map.web: unknown channel 'fax'"),
]


@pytest.mark.parametrize(("sources", "message"), SOURCE_PROBLEMS)
def test_ticket_source_mapping_rejected(sources, message):
    with pytest.raises(ConfigError) as caught:
        parse_config({"tickets": {"sources": sources}})

    assert message in str(caught.value)


def problems_of(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "slawatch.yml")
    return caught.value.problems


def office_calendar(**fields) -> dict:
    return {"tickets": {"calendars": {"office": {"timezone": "Asia/Shanghai", **fields}}}}


def test_calendar_overlapping_ranges_rejected():
    problems = problems_of(office_calendar(hours={"fri": ["09:00-12:00", "11:00-13:00"]}))

    assert problems == [
        "tickets.calendars.office.hours.fri: time ranges '09:00-12:00' and '11:00-13:00' overlap, so their shared "
        "time would count twice: merge them into 09:00-13:00, or let one range end where the other starts"
    ]


def test_calendar_overlaps_reported_per_day():
    problems = problems_of(office_calendar(
        hours={"mon": ["13:00-18:00", "09:00-14:00"], "tue": ["09:00-12:00", "10:00-11:00", "11:30-13:00"]},
        workday_hours=["10:00-16:00", "15:00-17:00"]))

    assert len(problems) == 3
    assert problems[0].startswith("tickets.calendars.office.hours.mon: time ranges '09:00-14:00' and "
                                  "'13:00-18:00' overlap")
    assert "merge them into 09:00-18:00" in problems[0]
    assert problems[1].startswith("tickets.calendars.office.hours.tue: time ranges overlap ('09:00-12:00' and "
                                  "'10:00-11:00', '09:00-12:00' and '11:30-13:00')")
    assert problems[2].startswith("tickets.calendars.office.workday_hours: time ranges '10:00-16:00' and "
                                  "'15:00-17:00' overlap")


@pytest.mark.parametrize("ranges", [["09:00-12:00", "12:00-13:00"], ["13:00-18:00", "09:00-12:00"],
                                    ["00:00-09:00", "18:00-24:00"]])
def test_calendar_separate_ranges_accepted(ranges):
    config = parse_config(office_calendar(hours={"fri": ranges}, workday_hours=ranges))

    assert config.tickets.calendars["office"].hours["fri"] == ranges
    assert config.tickets.calendars["office"].workday_hours == ranges


def test_calendar_bad_ranges_each_at_own_path():
    problems = problems_of(office_calendar(hours={"tue": ["9-18", "09:00-18:00", "18:00-17:00"],
                                                  "wed": ["09:00"]}))

    assert problems == [
        "tickets.calendars.office.hours.tue[0]: invalid time range '9-18': use HH:MM-HH:MM, for example 09:00-18:00",
        "tickets.calendars.office.hours.tue[2]: time range '18:00-17:00' ends before it starts: use HH:MM-HH:MM "
        "with the end later, or 24:00",
        "tickets.calendars.office.hours.wed[0]: invalid time range '09:00': use HH:MM-HH:MM, for example 09:00-18:00",
    ]


def test_calendar_unknown_day_names_key():
    problems = problems_of(office_calendar(hours={"monday": ["09:00-18:00"], "Tue": ["09:00-18:00"]}))

    assert problems == [
        "tickets.calendars.office.hours.monday: unknown day 'monday': use mon, tue, wed, thu, fri, sat or sun",
        "tickets.calendars.office.hours.Tue: unknown day 'Tue': use mon, tue, wed, thu, fri, sat or sun",
    ]


def test_calendar_date_in_holidays_and_workdays():
    problems = problems_of(office_calendar(hours={"mon": ["09:00-18:00"]},
                                           holidays=["2025-10-01", "2025-10-02"], workdays=["2025-10-01", "2025-09-28"]))

    assert problems == [
        "tickets.calendars.office.workdays: 2025-10-01 is also listed in holidays: a date is either a holiday or a "
        "make-up working day, so remove it from one of the two lists"
    ]


def test_calendar_distinct_holidays_and_workdays_accepted():
    config = parse_config(office_calendar(hours={"mon": ["09:00-18:00"]}, holidays=["2025-10-01"],
                                          workdays=["2025-09-28"]))

    assert [day.isoformat() for day in config.tickets.calendars["office"].workdays] == ["2025-09-28"]


def test_calendar_bare_date_asks_for_list(tmp_path: Path):
    path = tmp_path / "slawatch.yml"
    path.write_text("tickets:\n  calendars:\n    office:\n      hours: {mon: ['09:00-18:00']}\n"
                    "      holidays: 2025-10-01\n", encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.problems == [
        "tickets.calendars.office.holidays: expected a list of dates such as [2025-10-01], got 2025-10-01"
    ]


@pytest.mark.parametrize("key", ["channels", "priorities"])
def test_ticket_names_must_be_unique(key):
    names = ["low", "normal", "low", "high", "normal"]
    kind = {"channels": "channel", "priorities": "priority"}[key]

    problems = problems_of({"tickets": {key: names}})

    assert problems == [f"tickets.{key}: duplicate {kind} 'low', 'normal': list each {kind} once"]


@pytest.mark.parametrize("threshold", ["0s", 0])
def test_ticket_sla_threshold_must_be_positive(threshold):
    problems = problems_of({"tickets": {"slas": [{"name": "first_response", "threshold": threshold}]}})

    assert problems == ["tickets.slas[0].threshold: threshold 0s must be greater than 0s because it becomes a "
                        "histogram bucket bound: use a latency such as 1h"]


def test_ticket_sla_threshold_becomes_bucket():
    config = parse_config({"tickets": {"slas": [{"name": "fast", "threshold": "45m"}]}})

    assert 2700.0 in config.tickets.buckets_for("first_response")
    assert all(bound > 0 for bound in config.tickets.buckets_for("first_response"))


WORDING = [
    # (data, the whole problem line)
    (office_calendar(timezone="Asia/Beijing", hours={"mon": ["09:00-18:00"]}),
     "tickets.calendars.office.timezone: unknown time zone 'Asia/Beijing': use an IANA name such as Asia/Shanghai "
     "or UTC"),
    ({"tickets": {"teams": {"L1": "L1 Support"}}},
     "tickets.teams.L1: 'L1 Support' is not a valid name: use letters, digits, '_', '.' or '-', starting with a "
     "letter or '_'"),
    ({"tickets": {"slas": [{"name": "fr", "threshold": "1h", "channels": "email"}]}},
     "tickets.slas[0].channels: expected a list, got 'email': write it as a list: [email]"),
    ({"tickets": {"calendars": {"office": {"hours": {"mon": "09:00-18:00"}}}}},
     "tickets.calendars.office.hours.mon: expected a list, got '09:00-18:00': write it as a list: ['09:00-18:00']"),
    ({"tickets": {"sources": {"rt": {"url": "http://127.0.0.1:1", "token_file": "t", "priority_map": {"p1": "low"}}}}},
     "tickets.sources.rt.priority_map.p1: expected a whole number, got 'p1'"),
    ({"modules": {"web": {"prober": "http", "http": {"valid_status_codes": [700]}}}},
     "modules.web.http.valid_status_codes[0]: status code 700 is out of range: use codes between 100 and 599"),
    ({"targets": [{"service": "web", "url": "http://127.0.0.1/", "interval": "2x"}]},
     "targets[0].interval: invalid duration '2x': use a string like 30s, 5m, 1h30m or 30d"),
    ({"tickets": {"channels": None}},
     "tickets.channels: expected a list, got an empty value: write the items as a list, or [] for none"),
    ({"global": {"probe_duration_buckets": [1, 0.5]}},
     "global.probe_duration_buckets: bucket bounds must be sorted ascending with no duplicates, got [1, 0.5]"),
]


@pytest.mark.parametrize(("data", "line"), WORDING)
def test_problem_wording_names_value_once(data, line):
    assert problems_of(data) == [line]


def test_label_value_may_start_with_underscore():
    config = parse_config({"tickets": {"channels": ["_internal", "email"]}})

    assert config.tickets.channels == ["_internal", "email"]


def test_probe_allow_bad_entries_each_reported():
    found = problems_of({"probe": {"allow": ["127.0.0.0/8", "", "  ", "*.example.com", "10.0.0.0/33", " db"]}})

    assert len(found) == 5
    assert found[0].startswith("probe.allow[1]: empty entry: write a host name, an IP address or a CIDR range")
    assert found[1].startswith("probe.allow[2]: empty entry")
    assert found[2].startswith("probe.allow[3]: '*.example.com' is a wildcard pattern")
    assert "list each host name, or a CIDR range" in found[2]
    assert found[3].startswith("probe.allow[4]: '10.0.0.0/33' is not a valid CIDR range")
    assert found[4].startswith("probe.allow[5]: ' db' contains whitespace")


def test_probe_allow_good_entries_accepted():
    entries = ["127.0.0.0/8", "::1/128", "localhost", "api.example.com", "192.0.2.7"]

    assert parse_config({"probe": {"allow": entries}}).probe.allow == entries


def test_status_code_problems_all_reported():
    found = problems_of({"modules": {"m": {"prober": "http", "http": {"valid_status_codes": [999, "2xx", 200]}}}})

    assert found == ["modules.m.http.valid_status_codes[0]: status code 999 is out of range: "
                     "use codes between 100 and 599",
                     "modules.m.http.valid_status_codes[1]: expected a whole number, got '2xx'"]


def test_dns_problems_all_reported():
    dns = {"query_name": "example.com", "query_type": "AAAAA", "query_class": "XX",
           "valid_rcodes": ["NOERROR", "NOPE"]}

    found = problems_of({"modules": {"d": {"prober": "dns", "dns": dns}}})

    assert len(found) == 3
    assert found[0].startswith("modules.d.dns.query_type: query_type 'AAAAA' is unknown")
    assert found[1].startswith("modules.d.dns.query_class: query_class 'XX' is unknown")
    assert found[2].startswith("modules.d.dns.valid_rcodes[1]: valid_rcodes entry 'NOPE' is unknown")


@pytest.mark.parametrize(("options", "follow"), [
    ({"no_follow_redirects": True}, False),
    ({"no_follow_redirects": False}, True),
    ({"no_follow_redirects": True, "follow_redirects": False}, False),
    ({"follow_redirects": False}, False),
    ({}, True),
])
def test_no_follow_redirects_sets_follow(options, follow):
    config = parse_config({"modules": {"m": {"prober": "http", "http": options}}})

    assert config.modules["m"].http.follow_redirects is follow


@pytest.mark.parametrize("value", [True, False])
def test_contradicting_redirect_options_rejected(value):
    found = problems_of({"modules": {"m": {"prober": "http", "http": {
        "no_follow_redirects": value, "follow_redirects": value}}}})

    word = str(value).lower()
    assert found == [f"modules.m.http: follow_redirects: {word} contradicts no_follow_redirects: {word}: "
                     "remove no_follow_redirects, which blackbox_exporter deprecates, and keep follow_redirects"]


def test_follow_redirects_hosts_not_called_blackbox_option():
    found = problems_of({"modules": {"m": {"prober": "http", "http": {"follow_redirects_hosts": ["a"]}}}})

    assert len(found) == 1
    assert "unknown option 'follow_redirects_hosts'" in found[0]
    assert "not an option of slawatch or of blackbox_exporter 0.23" in found[0]
    assert "unsupported blackbox_exporter option" not in found[0]


def test_tls_max_version_accepted():
    config = parse_config({"modules": {"m": {"prober": "tcp", "tcp": {"tls_config": {
        "min_version": "TLS12", "max_version": "TLS13"}}}}})

    assert config.modules["m"].tcp.tls_config.max_version == "TLS13"


@pytest.mark.parametrize(("tls", "line"), [
    ({"max_version": "TLS14"}, "modules.m.http.tls_config.max_version: must be 'TLS10', 'TLS11', 'TLS12' or "
                               "'TLS13', got 'TLS14'"),
    ({"min_version": "TLS13", "max_version": "TLS12"},
     "modules.m.http.tls_config: min_version TLS13 is above max_version TLS12, so no TLS version is allowed: "
     "lower min_version or raise max_version"),
])
def test_tls_max_version_rejected(tls, line):
    assert problems_of({"modules": {"m": {"prober": "http", "http": {"tls_config": tls}}}}) == [line]


@pytest.mark.parametrize(("value", "words"), [
    ("100000000000000000000y", "duration '100000000000000000000y' is out of range: the maximum is 292y"),
    ("1" + "0" * 400 + "s", "is out of range: the maximum is 292y"),
    ("366d", "366d is longer than the maximum of 365d for a timeout or interval"),
    (1e300, "1e+300s is longer than the maximum of 365d"),
])
def test_timeout_bounded(value, words):
    found = problems_of({"modules": {"m": {"prober": "http", "timeout": value}}})

    assert len(found) == 1
    assert found[0].startswith("modules.m.timeout: ")
    assert words in found[0]


def test_interval_bounded():
    data = with_change(["targets", 0, "interval"], "400d")

    assert problems_of(data) == ["targets[0].interval: 400d is longer than the maximum of 365d for a timeout or "
                                 "interval: use a shorter duration such as 10s or 5m"]


def test_longest_timeout_accepted():
    config = parse_config({"modules": {"m": {"prober": "http", "timeout": "365d"}}})

    assert config.modules["m"].timeout == 365 * 86400


def test_dont_fragment_message_uses_yaml_booleans():
    found = problems_of({"modules": {"i": {"prober": "icmp", "icmp": {"dont_fragment": True}}}})

    assert found == ["modules.i.icmp.dont_fragment: dont_fragment: true is not supported, because slawatch does "
                     "not set the IP don't-fragment flag: remove dont_fragment or set it to false"]
    assert parse_config({"modules": {"i": {"prober": "icmp", "icmp": {"dont_fragment": False}}}})


@pytest.mark.parametrize(("tls", "words"), [
    ({"max_version": "TLS12"}, "max_version is not supported by the grpc prober"),
    ({"min_version": "TLS12", "max_version": "TLS13"}, "min_version and max_version are not supported"),
])
def test_grpc_tls_version_limits_rejected(tls, words):
    found = problems_of({"modules": {"g": {"prober": "grpc", "grpc": {"tls": True, "tls_config": tls}}}})

    assert len(found) == 1
    assert found[0].startswith("modules.g.grpc.tls_config: ")
    assert words in found[0]
    assert found[0].endswith("cannot limit TLS versions: remove it" if len(tls) == 1 else
                             "cannot limit TLS versions: remove them")
