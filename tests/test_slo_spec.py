"""Tests of the SLO spec: SLI kinds, routing labels, rule counts, the
PrometheusRule manifest and `slawatch slo import`.

The promtool tests run the real `promtool` binary and are skipped only when it
is not on PATH.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from slawatch.cli import main
from slawatch.config import ConfigError, parse_config
from slawatch.generate.rules import (
    PROMETHEUS_RULE_DIR,
    PROMETHEUS_RULE_FILE,
    RULES_FILE,
    build_prometheus_rule,
    build_rules,
    write_prometheus_rule,
    write_rules,
)
from slawatch.slo_import import SpecImportError, import_files

REPO = Path(__file__).resolve().parents[1]
IMPORT_DATA = REPO / "tests" / "data" / "slo_import"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not on PATH")
MAX_RECORDING_RULES_PER_SLO = 15

BASE = {
    "global": {"transfer_speed_buckets": [100000, 1000000, 10000000]},
    "modules": {"http_2xx": {"prober": "http", "timeout": "5s"}},
    "targets": [{"service": "cdn", "url": "http://127.0.0.1:8080/file", "interval": "30s"}],
}

# One SLO of every SLI kind.
EVERY_KIND = [
    {"name": "cdn-availability", "service": "cdn", "sli": "probe_availability", "objective": 99.5},
    {"name": "cdn-blackbox", "service": "cdn", "sli": "probe_availability", "objective": 99,
     "source": "probe_success", "matchers": {"job": "blackbox", "instance": "https://cdn.example.com/"}},
    {"name": "cdn-latency", "service": "cdn", "sli": "probe_latency", "threshold": "1s", "objective": 95},
    {"name": "cdn-speed", "service": "cdn", "sli": "transfer_speed", "threshold": 1000000, "objective": 90,
     "window": "7d", "chat": "dingtalk"},
    {"name": "support-first-response", "service": "support", "sli": "ticket_first_response", "threshold": "1h",
     "objective": 95, "team": "support", "channel": "phone", "ticket_team": "l1", "chat": "wecom"},
    {"name": "support-resolution", "service": "support", "sli": "ticket_resolution", "threshold": "1d",
     "objective": 90, "window": "28d", "clock": "calendar", "team": "support", "chat": "feishu",
     "labels": {"tier": "gold"}},
    {"name": "shop-errors", "service": "shop", "sli": "custom_ratio", "objective": 99.9,
     "bad_query": 'sum(rate(http_requests_total{job="shop",code=~"5.."}[{{.window}}]))',
     "total_query": 'sum(rate(http_requests_total{job="shop"}[{{.window}}]))', "chat": "slack"},
    {"name": "shop-good", "service": "shop", "sli": "custom_ratio", "objective": 99,
     "good_query": 'sum(rate(http_requests_total{job="shop",code!~"5.."}[{{.window}}]))',
     "total_query": 'sum(rate(http_requests_total{job="shop"}[{{.window}}]))'},
]


def config_with(slos: list[dict], **sections) -> dict:
    return {**BASE, **sections, "slos": slos}


def group(document: dict, slo: str) -> dict:
    return next(g for g in document["groups"] if g["name"] == f"slawatch-slo/{slo}")


def record_expr(document: dict, slo: str, record: str) -> str:
    return next(r["expr"] for r in group(document, slo)["rules"] if r.get("record") == record)


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


# --- SLI kinds -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slo", "expected"),
    [
        (
            "cdn-blackbox",
            '1 - sum(sum_over_time(probe_success{job="blackbox",instance="https://cdn.example.com/"}[1h]))'
            ' / (sum(count_over_time(probe_success{job="blackbox",instance="https://cdn.example.com/"}[1h])) > 0)',
        ),
        (
            # prometheus_client writes the bucket bound 1000000 as le="1e+06".
            "cdn-speed",
            'sum(rate(slawatch_probe_transfer_bytes_per_second_bucket{service="cdn",le="1e+06"}[1h]))'
            ' / (sum(rate(slawatch_probe_transfer_bytes_per_second_count{service="cdn"}[1h])) > 0)',
        ),
        (
            "support-first-response",
            "1 - sum(rate(slawatch_ticket_first_response_seconds_bucket"
            '{channel="phone",team="l1",clock="business",le="3600.0"}[1h]))'
            " / (sum(rate(slawatch_ticket_first_response_seconds_count"
            '{channel="phone",team="l1",clock="business"}[1h])) > 0)',
        ),
        (
            "support-resolution",
            '1 - sum(rate(slawatch_ticket_full_resolution_seconds_bucket{clock="calendar",le="86400.0"}[1h]))'
            ' / (sum(rate(slawatch_ticket_full_resolution_seconds_count{clock="calendar"}[1h])) > 0)',
        ),
        (
            "shop-errors",
            '(sum(rate(http_requests_total{job="shop",code=~"5.."}[1h])))'
            ' / ((sum(rate(http_requests_total{job="shop"}[1h]))) > 0)',
        ),
        (
            "shop-good",
            '1 - (sum(rate(http_requests_total{job="shop",code!~"5.."}[1h])))'
            ' / ((sum(rate(http_requests_total{job="shop"}[1h]))) > 0)',
        ),
    ],
)
def test_error_ratio_per_kind(slo, expected):
    document = build_rules(parse_config(config_with(EVERY_KIND)))

    assert record_expr(document, slo, "slo:sli_error:ratio_rate1h") == expected


@pytest.mark.parametrize(
    ("slo", "guard"),
    [
        ("cdn-blackbox", 'sum(count_over_time(probe_success{job="blackbox",instance="https://cdn.example.com/"}[1h]))'),
        ("cdn-speed", 'sum(increase(slawatch_probe_transfer_bytes_per_second_count{service="cdn"}[1h]))'),
        ("shop-errors", '(sum(rate(http_requests_total{job="shop"}[1h]))) * 3600'),
    ],
)
def test_event_guard_per_kind(slo, guard):
    rules = group(build_rules(parse_config(config_with(EVERY_KIND))), slo)["rules"]
    fast_page = next(r for r in rules if r.get("alert") == "SLOErrorBudgetBurn")

    assert f"and on() {guard} >= " in fast_page["expr"]


@pytest.mark.parametrize(
    ("slo", "expected"),
    [
        ("cdn-blackbox", 'absent_over_time(probe_success{job="blackbox",instance="https://cdn.example.com/"}[5m])'),
        ("cdn-speed", 'absent(slawatch_probes_total{service="cdn"}) or '
                      'sum(increase(slawatch_probes_total{service="cdn"}[5m])) == 0'),
        ("support-first-response", 'absent(slawatch_tickets_created_total{channel="phone"})'),
        ("shop-errors", 'absent(sum(rate(http_requests_total{job="shop"}[5m])))'),
    ],
)
def test_absent_alert_per_kind(slo, expected):
    rules = group(build_rules(parse_config(config_with(EVERY_KIND))), slo)["rules"]
    absent = next(r for r in rules if r.get("alert") == "SLIDataAbsent")

    assert absent["expr"] == expected


def test_recording_rules_per_slo_at_most_15():
    document = build_rules(parse_config(config_with(EVERY_KIND)))

    for slo in EVERY_KIND:
        records = [r for r in group(document, slo["name"])["rules"] if "record" in r]
        # 8 error ratios (7 alert windows and the SLO window), 2 page burn
        # rates, objective, error budget, budget left.
        assert len(records) == 13, slo["name"]
        assert len(records) <= MAX_RECORDING_RULES_PER_SLO


def test_routing_labels_on_alerts_only():
    document = build_rules(parse_config(config_with(EVERY_KIND)))

    for rule in group(document, "support-resolution")["rules"]:
        if "alert" in rule:
            assert rule["labels"]["chat"] == "feishu", rule["alert"]
            assert rule["labels"]["tier"] == "gold", rule["alert"]
            assert rule["labels"]["team"] == "support", rule["alert"]
        else:
            assert set(rule["labels"]) == {"slo", "service", "team"}, rule["record"]
    for rule in group(document, "shop-good")["rules"]:
        assert "chat" not in rule["labels"]


def test_rolling_windows_recorded():
    document = build_rules(parse_config(config_with(EVERY_KIND)))

    assert 'ratio_rate7d{slo="cdn-speed"}' in record_expr(document, "cdn-speed", "slo:error_budget_remaining:ratio")
    assert 'ratio_rate28d{slo="support-resolution"}' in record_expr(
        document, "support-resolution", "slo:error_budget_remaining:ratio"
    )


# --- config errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("slo", "message"),
    [
        (
            {"sli": "custom_ratio", "bad_query": "sum(rate(x[{{.window}}])",
             "total_query": "sum(rate(y[{{.window}}]))"},
            "slos[0].bad_query: query 'sum(rate(x[{{.window}}])' is not valid PromQL: unclosed left parenthesis",
        ),
        (
            {"sli": "custom_ratio", "bad_query": "sum(rate(x[5m]))", "total_query": "sum(rate(y[{{.window}}]))"},
            "has no {{.window}} placeholder",
        ),
        (
            {"sli": "custom_ratio", "total_query": "sum(rate(y[{{.window}}]))"},
            "sli custom_ratio needs total_query and exactly one of bad_query or good_query",
        ),
        (
            {"sli": "custom_ratio", "bad_query": "sum(rate(x[{{.window}}]))", "good_query": "sum(rate(z[{{.window}}]))",
             "total_query": "sum(rate(y[{{.window}}]))"},
            "exactly one of bad_query or good_query",
        ),
        (
            {"sli": "transfer_speed", "service": "cdn", "threshold": 2000000},
            "slos[0].threshold: 2e+06 bytes/s is not a bucket boundary of global.transfer_speed_buckets",
        ),
        (
            {"sli": "ticket_resolution", "threshold": "5h"},
            "slos[0].threshold: 5h is not a bucket boundary of tickets.resolution_buckets",
        ),
        (
            {"sli": "probe_availability", "service": "cdn", "source": "probe_success"},
            "source probe_success needs matchers",
        ),
        (
            {"sli": "probe_latency", "service": "cdn", "threshold": "1s", "source": "probe_success"},
            "source applies only to sli probe_availability",
        ),
        (
            {"sli": "ticket_first_response", "threshold": "1h", "clock": "wall"},
            "slos[0].clock: must be 'business' or 'calendar'",
        ),
        (
            {"sli": "probe_availability", "service": "cdn", "chat": "teams"},
            "slos[0].chat: must be 'wecom', 'dingtalk', 'feishu' or 'slack'",
        ),
        (
            {"sli": "probe_availability", "service": "cdn", "labels": {"severity": "high"}},
            "labels ['severity'] are set by slawatch",
        ),
        (
            {"sli": "probe_availability", "service": "cdn", "labels": {"cost-centre": "a"}},
            "'cost-centre' is not a valid Prometheus label name",
        ),
        (
            {"sli": "probe_availability", "service": "cdn", "ticket_team": "l1"},
            "channel, priority and ticket_team apply only to the ticket SLIs",
        ),
    ],
)
def test_slo_config_errors(slo, message):
    spec = {"name": "x", "service": "shop", "objective": 99, **slo}

    with pytest.raises(ConfigError) as raised:
        parse_config(config_with([spec]), "slawatch.yml")

    assert message in str(raised.value)
    assert str(raised.value).startswith("slawatch.yml: invalid config:")


def test_alerting_guard_settings_validated():
    with pytest.raises(ConfigError) as raised:
        parse_config(config_with([], alerting={"min_events": 0, "outage_ratio": 1.5}), "slawatch.yml")

    assert "alerting.min_events" in str(raised.value)
    assert "alerting.outage_ratio" in str(raised.value)


# --- promtool ------------------------------------------------------------------------


@needs_promtool
@pytest.mark.integration
def test_every_kind_passes_promtool_check(tmp_path):
    path = write_rules(parse_config(config_with(EVERY_KIND)), tmp_path)[0]

    result = run_promtool("check", "rules", str(path), cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
@pytest.mark.integration
def test_new_kinds_error_ratios_in_promtool(tmp_path):
    """Check the 1h error ratio of three kinds on series with known shares of bad events.

    cdn-blackbox: 1 of every 4 /probe scrapes fails. The range [t - 1h, t]
    includes both ends, so it contains 241 samples at 15s, and 60 of them are 0.
    cdn-speed: 10 transfers a minute, 2 at or below 1 MB/s, so 20% are bad.
    shop-errors: 100 requests a minute, 1 with a 5xx code, so 1% are bad.
    """
    write_rules(parse_config(config_with(EVERY_KIND)), tmp_path)
    blackbox = 'probe_success{job="blackbox",instance="https://cdn.example.com/"}'

    def expected(slo: str, service: str, team: str, value: float) -> dict:
        labels = f'slo:sli_error:ratio_rate1h{{slo="{slo}",service="{service}",team="{team}"}}'
        return {"expr": f'slo:sli_error:ratio_rate1h{{slo="{slo}"}}', "eval_time": "90m",
                "exp_samples": [{"labels": labels, "value": value}]}

    unit_tests = {
        "rule_files": [f"rules/{RULES_FILE}"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "15s",
            "input_series": [
                {"series": blackbox, "values": " ".join(["1 1 1 0"] * 100)},
                {"series": 'slawatch_probe_transfer_bytes_per_second_bucket{service="cdn",module="http_2xx",'
                           'location="a",le="1e+06"}', "values": "0+0.5x400"},
                {"series": 'slawatch_probe_transfer_bytes_per_second_count{service="cdn",module="http_2xx",'
                           'location="a"}', "values": "0+2.5x400"},
                {"series": 'http_requests_total{job="shop",code="200"}', "values": "0+24.75x400"},
                {"series": 'http_requests_total{job="shop",code="503"}', "values": "0+0.25x400"},
            ],
            "promql_expr_test": [
                expected("cdn-blackbox", "cdn", "sre", 60 / 241),
                expected("cdn-speed", "cdn", "sre", 0.2),
                expected("shop-errors", "shop", "sre", 0.01),
            ],
        }],
    }
    test_file = tmp_path / "unit-tests.yml"
    test_file.write_text(yaml.safe_dump(unit_tests, sort_keys=False, width=1000), encoding="utf-8")

    result = run_promtool("test", "rules", str(test_file), cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr


# --- PrometheusRule --------------------------------------------------------------------


def test_prometheus_rule_groups_equal_rule_file(tmp_path):
    config = parse_config(config_with(EVERY_KIND))
    rule_file = yaml.safe_load(write_rules(config, tmp_path)[0].read_text(encoding="utf-8"))

    written = write_prometheus_rule(config, tmp_path)

    assert written == [tmp_path / PROMETHEUS_RULE_DIR / PROMETHEUS_RULE_FILE]
    manifest = yaml.safe_load(written[0].read_text(encoding="utf-8"))
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["metadata"]["name"] == "slawatch-rules"
    assert manifest["spec"]["groups"] == rule_file["groups"]
    assert build_prometheus_rule(config)["spec"] == build_rules(config)


def test_generate_format_prometheusrule(tmp_path, capsys):
    code = main(["generate", "--format", "prometheusrule", "--output-dir", str(tmp_path)])

    assert code == 0
    assert (tmp_path / PROMETHEUS_RULE_DIR / PROMETHEUS_RULE_FILE).is_file()
    assert not (tmp_path / "rules").exists()
    assert "slawatch-prometheusrule.yml" in capsys.readouterr().out


# --- slo import --------------------------------------------------------------------------


def test_import_sloth_spec():
    result = import_files([IMPORT_DATA / "sloth-myservice.yml"])

    availability, latency = result.slos
    assert availability == {
        "name": "myservice-requests-availability",
        "service": "myservice",
        "sli": "custom_ratio",
        "objective": 99.9,
        "window": "30d",
        "bad_query": 'sum(rate(http_request_duration_seconds_count{job="myservice",code=~"(5..|429)"}[{{.window}}]))',
        "total_query": 'sum(rate(http_request_duration_seconds_count{job="myservice"}[{{.window}}]))',
        "description": "Common SLO based on availability for HTTP request responses.",
        "labels": {"owner": "myteam", "repo": "myorg-myservice", "tier": "2", "category": "availability"},
    }
    assert latency["team"] == "payments"
    assert latency["bad_query"].startswith("( sum(rate(http_request_duration_seconds_count")
    assert any("slos[0].alerting.page_alert is not carried over" in w for w in result.warnings)
    assert any("slos[1].alerting.name is not carried over" in w for w in result.warnings)


def test_import_openslo_documents():
    result = import_files([IMPORT_DATA / "openslo-web.yml"])

    web, search = result.slos
    assert web == {
        "name": "web-availability",
        "service": "web",
        "sli": "custom_ratio",
        "objective": 99.5,
        "window": "28d",
        "bad_query": 'sum(rate(http_requests_total{job="web",code=~"5.."}[{{.window}}]))',
        "total_query": 'sum(rate(http_requests_total{job="web"}[{{.window}}]))',
        "description": "99.5% of web requests succeed over 28 days",
        "team": "web",
        "labels": {"tier": "gold"},
    }
    assert search["window"] == "7d"
    assert search["objective"] == 99
    assert search["good_query"] == 'sum(rate(search_requests_total{outcome="ok"}[{{.window}}]))'
    assert search["total_query"] == "sum(rate(search_requests_total[{{.window}}]))"
    assert any("spec.alertPolicies are not carried over" in w for w in result.warnings)


def test_imported_slos_generate_valid_rules(tmp_path):
    slos = import_files([IMPORT_DATA / "sloth-myservice.yml", IMPORT_DATA / "openslo-web.yml"]).slos

    config = parse_config(config_with(slos))

    assert len(build_rules(config)["groups"]) == len(slos) + 1
    if PROMTOOL:
        path = write_rules(config, tmp_path)[0]
        result = run_promtool("check", "rules", str(path), cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("file", "message"),
    [
        ("sloth-raw.yml", "slos[0].sli.raw: a precomputed error ratio does not map"),
        ("sloth-bad-query.yml", "is not valid PromQL: unclosed left parenthesis"),
        ("openslo-timeslices.yml", "spec.budgetingMethod: 'Timeslices' does not map"),
        ("openslo-calendar.yml", "spec.timeWindow[0]: calendar-aligned windows do not map"),
        ("openslo-datadog.yml", "metricSource.type: 'Datadog' does not map: slawatch reads Prometheus only"),
    ],
)
def test_import_rejects_what_does_not_map(file, message):
    with pytest.raises(SpecImportError) as raised:
        import_files([IMPORT_DATA / file])

    assert message in str(raised.value)
    assert str(raised.value).startswith(f"{IMPORT_DATA / file}: cannot import:")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: prometheus/v2\nservice: a\n", "unsupported spec version 'prometheus/v2'"),
        ("apiVersion: sloth.slok.dev/v1\nkind: PrometheusServiceLevel\n", "unsupported spec version"),
        ("version: prometheus/v1\nservice: a\nslos:\n  - name: b\n    objective: 100\n", "objective: 100 does not map"),
        ("version: prometheus/v1\nslos: []\n", "service: required key is missing"),
        ("- a\n- b\n", "document 1: expected a mapping, got list"),
        ("slos: [", "invalid YAML"),
        (
            "apiVersion: openslo/v1\nkind: SLO\nmetadata: {name: a}\nspec:\n  service: s\n  budgetingMethod: "
            "Occurrences\n  objectives: [{target: 0.9}, {target: 0.99}]\n",
            "2 objectives do not map",
        ),
        (
            "apiVersion: openslo/v1\nkind: SLO\nmetadata: {name: a}\nspec:\n  service: s\n  budgetingMethod: "
            "Occurrences\n  timeWindow: [{duration: 1M, isRolling: true}]\n  objectives: [{target: 0.9}]\n",
            "spec.timeWindow[0].duration: '1M' does not map",
        ),
        (
            "apiVersion: openslo/v1\nkind: SLO\nmetadata: {name: a}\nspec:\n  service: s\n  budgetingMethod: "
            "Occurrences\n  objectives: [{target: 0.9}]\n  indicator:\n    spec:\n      ratioMetric:\n"
            "        counter: true\n        good: {metricSource: {type: Prometheus, spec: {query: 'sum by (a) (x)'}}}\n"
            "        total: {metricSource: {type: Prometheus, spec: {query: x}}}\n",
            "write a plain series selector",
        ),
        (
            "apiVersion: openslo/v1\nkind: SLO\nmetadata: {name: a}\nspec:\n  service: s\n  budgetingMethod: "
            "Occurrences\n  objectives: [{target: 0.9}]\n  indicator:\n    spec:\n      ratioMetric:\n"
            "        counter: false\n        good: {metricSource: {type: Prometheus, spec: {query: x}}}\n"
            "        total: {metricSource: {type: Prometheus, spec: {query: y}}}\n",
            "only counters (counter: true) map",
        ),
    ],
)
def test_import_error_table(tmp_path, text, message):
    path = tmp_path / "spec.yml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(SpecImportError) as raised:
        import_files([path])

    assert message in str(raised.value)


def test_import_missing_file(tmp_path):
    with pytest.raises(SpecImportError) as raised:
        import_files([tmp_path / "missing.yml"])

    assert "cannot read the file: No such file or directory" in str(raised.value)


def test_import_duplicate_names():
    with pytest.raises(SpecImportError) as raised:
        import_files([IMPORT_DATA / "openslo-web.yml", IMPORT_DATA / "openslo-web.yml"])

    assert "duplicate SLO names ['search-availability', 'web-availability']" in str(raised.value)


def test_slo_import_cli(tmp_path):
    output = tmp_path / "slos.yml"

    result = subprocess.run(
        [sys.executable, "-m", "slawatch", "slo", "import", str(IMPORT_DATA / "sloth-myservice.yml"),
         str(IMPORT_DATA / "openslo-web.yml"), "--output", str(output)],
        capture_output=True, text=True, timeout=60, check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "Wrote 4 SLOs to" in result.stderr
    assert "Warning:" in result.stderr
    names = [slo["name"] for slo in yaml.safe_load(output.read_text(encoding="utf-8"))["slos"]]
    assert names == ["myservice-requests-availability", "myservice-requests-latency", "web-availability",
                     "search-availability"]


def test_slo_import_cli_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "slawatch", "slo", "import", str(IMPORT_DATA / "sloth-raw.yml")],
        capture_output=True, text=True, timeout=60, check=False,
    )

    assert result.returncode == 1
    assert "sli.raw: a precomputed error ratio does not map" in result.stderr
    assert "Nothing was imported." in result.stderr
    assert result.stdout == ""
