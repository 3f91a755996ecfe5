"""Tests of the generated Grafana dashboards: drift, schema, lint rules, locales and metric names."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import promql_parser
import pytest
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from slawatch import names
from slawatch.config import Config, load_config, parse_config
from slawatch.generate.dashboards import build_dashboards, render_dashboard, write_dashboards

REPO = Path(__file__).resolve().parents[1]
SCHEMA_DIR = Path(os.environ.get("SLAWATCH_GRAFANA_SCHEMA_DIR", REPO.parent / "shared" / "grafana-jsonschema"))

DASHBOARD_FILES = ("slawatch-overview.json", "slawatch-service.json", "slawatch-slo.json", "slawatch-support.json")
EXPECTED_VARIABLES = {
    "slawatch-overview.json": ["datasource", "service", "location"],
    "slawatch-service.json": ["datasource", "service", "location"],
    "slawatch-slo.json": ["datasource", "service", "slo"],
    "slawatch-support.json": ["datasource", "channel", "priority", "clock"],
}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
ALLOWED_PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "table", "state-timeline", "text"}
RANGE_FUNCTIONS = {"rate", "increase"}
# Functions that may take a range of a gauge. Counters still belong in rate or increase.
GAUGE_RANGE_FUNCTIONS = {"avg_over_time", "max_over_time", "min_over_time"}
COUNTER_SUFFIXES = ("_total", "_count", "_bucket")
HISTOGRAMS = (names.PROBE_DURATION, names.TICKET_FIRST_RESPONSE, names.PROBE_TRANSFER_SPEED, names.TICKET_RESOLUTION)

# Values that Grafana substitutes for its built-in variables, so that promql_parser
# parses a query as Prometheus receives it. Other variables become ".*".
GRAFANA_VARIABLES = {"__rate_interval": "5m", "__range": "1h", "__interval": "1m"}

DEFAULT_CONFIG = load_config(None)
DASHBOARDS = build_dashboards(DEFAULT_CONFIG)


def with_locale(config: Config, locale: str) -> Config:
    return config.model_copy(update={"global_": config.global_.model_copy(update={"locale": locale})})


def panels_of(dashboard: dict) -> list[dict]:
    return dashboard["panels"]


def targets_of(dashboard: dict) -> list[tuple[dict, dict]]:
    return [(panel, target) for panel in panels_of(dashboard) for target in panel.get("targets", [])]


def substitute_variables(expr: str) -> str:
    def replace(match: re.Match) -> str:
        return GRAFANA_VARIABLES.get(match.group(1), ".*")

    return re.sub(r"\$\{?(\w+)\}?", replace, expr)


def parse(expr: str):
    return promql_parser.parse(substitute_variables(expr))


def children(node) -> list:
    """Return the sub-expressions of a promql_parser node."""
    if isinstance(node, promql_parser.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, promql_parser.AggregateExpr):
        return [node.expr] + ([node.param] if node.param is not None else [])
    if isinstance(node, promql_parser.Call):
        return list(node.args)
    if isinstance(node, (promql_parser.ParenExpr, promql_parser.UnaryExpr, promql_parser.SubqueryExpr)):
        return [node.expr]
    if isinstance(node, promql_parser.MatrixSelector):
        return [node.vector_selector]
    return []


def selector_name(node) -> str:
    if isinstance(node, promql_parser.MatrixSelector):
        node = node.vector_selector
    if node.name:
        return node.name
    return next((m.value for m in node.matchers.matchers if m.name == "__name__"), "")


def selectors(node, function: str | None = None) -> list[tuple[str, str | None, object]]:
    """Return (metric name, range function applied to it or None, node) of every selector.

    A range function only counts when the selector is its direct argument, so the
    counter in `rate(sum(x_total)[5m:])` counts as outside rate.
    """
    if isinstance(node, (promql_parser.VectorSelector, promql_parser.MatrixSelector)):
        return [(selector_name(node), function, node)]
    range_functions = RANGE_FUNCTIONS | GAUGE_RANGE_FUNCTIONS
    inner = node.func.name if isinstance(node, promql_parser.Call) and node.func.name in range_functions else None
    found = []
    for child in children(node):
        found += selectors(child, inner)
    return found


def text_paths(a, b, path=()) -> list[tuple]:
    """Return the paths where two JSON values differ, and fail if anything but a string differs."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), f"keys differ at {path}"
        return [p for key in a for p in text_paths(a[key], b[key], path + (key,))]
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"list lengths differ at {path}"
        return [p for index, (x, y) in enumerate(zip(a, b)) for p in text_paths(x, y, path + (index,))]
    if a == b:
        return []
    assert isinstance(a, str) and isinstance(b, str), f"non-text value differs at {path}: {a!r} != {b!r}"
    return [path]


# --- 1. committed files -------------------------------------------------------


def test_committed_dashboards_match_generator(tmp_path):
    written = write_dashboards(DEFAULT_CONFIG, tmp_path)
    committed_dir = REPO / "dashboards"

    assert sorted(path.name for path in written) == sorted(DASHBOARD_FILES)
    assert sorted(path.name for path in committed_dir.glob("*.json")) == sorted(DASHBOARD_FILES), (
        "dashboards/ holds other files than the generator writes: run `slawatch generate`"
    )
    for path in written:
        committed = (committed_dir / path.name).read_text(encoding="utf-8")
        assert committed == path.read_text(encoding="utf-8"), (
            f"dashboards/{path.name} differs from the generator output: run `slawatch generate` and commit it"
        )


def test_write_dashboards_is_deterministic(tmp_path):
    first = [path.read_bytes() for path in write_dashboards(DEFAULT_CONFIG, tmp_path / "a")]
    second = [path.read_bytes() for path in write_dashboards(DEFAULT_CONFIG, tmp_path / "b")]

    assert first == second
    assert all(content.endswith(b"}\n") for content in first)


# --- 2. schema ----------------------------------------------------------------


@pytest.fixture(scope="module")
def schemas():
    """Return (registry, base URI) of the Grafana JSON schemas, or skip when they are missing."""
    if not SCHEMA_DIR.is_dir():
        pytest.skip(f"Grafana JSON schemas not found in {SCHEMA_DIR}: set SLAWATCH_GRAFANA_SCHEMA_DIR")
    registry = Registry()
    for path in sorted(SCHEMA_DIR.glob("*.jsonschema.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        registry = registry.with_resource(path.as_uri(), Resource.from_contents(contents, default_specification=DRAFT7))
    return registry, SCHEMA_DIR.as_uri() + "/"


def validator(schemas, file_name: str, pointer: str = "") -> Draft7Validator:
    registry, base = schemas
    return Draft7Validator({"$ref": f"{base}{file_name}{pointer}"}, registry=registry)


def schema_errors(validator: Draft7Validator, instance) -> list[str]:
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(instance)]


def panel_schema_file(panel_type: str) -> Path:
    return SCHEMA_DIR / f"{panel_type.replace('-', '')}.jsonschema.json"


@pytest.mark.parametrize("file_name", DASHBOARD_FILES)
def test_dashboard_matches_grafana_schema(schemas, file_name):
    errors = schema_errors(validator(schemas, "dashboard.jsonschema.json"), DASHBOARDS[file_name])

    assert errors == []


@pytest.mark.parametrize("file_name", DASHBOARD_FILES)
def test_panels_match_panel_schemas(schemas, file_name):
    checked = 0
    for panel in panels_of(DASHBOARDS[file_name]):
        schema_file = panel_schema_file(panel["type"])
        assert schema_file.is_file(), f"no schema for panel type {panel['type']}"
        definitions = json.loads(schema_file.read_text(encoding="utf-8"))["definitions"]

        options = validator(schemas, schema_file.name, "#/definitions/Options")
        assert schema_errors(options, panel["options"]) == [], panel["title"]
        if "FieldConfig" in definitions:
            custom = validator(schemas, schema_file.name, "#/definitions/FieldConfig")
            assert schema_errors(custom, panel["fieldConfig"]["defaults"].get("custom", {})) == [], panel["title"]
        checked += 1

    assert checked == len(panels_of(DASHBOARDS[file_name]))


@pytest.mark.parametrize("file_name", DASHBOARD_FILES)
def test_targets_match_prometheus_query_schema(schemas, file_name):
    query = validator(schemas, "prometheus.jsonschema.json")
    for panel, target in targets_of(DASHBOARDS[file_name]):
        assert schema_errors(query, target) == [], f"{panel['title']} {target['refId']}"


@pytest.mark.parametrize("file_name", DASHBOARD_FILES)
def test_units_are_grafana_units(schemas, file_name):
    units = json.loads((SCHEMA_DIR / "units.jsonschema.json").read_text(encoding="utf-8"))["definitions"]
    known = {definition["const"] for definition in units.values()}
    for panel in panels_of(DASHBOARDS[file_name]):
        assert panel["fieldConfig"]["defaults"]["unit"] in known, panel["title"]


# --- 3. lint rules --------------------------------------------------------------


def lint_datasource_variable(dashboard: dict) -> list[str]:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    source = variables.get("datasource")
    if source is None:
        return ["no datasource variable"]
    if (source["type"], source["query"]) != ("datasource", "prometheus"):
        return [f"datasource variable is {source['type']} {source['query']}, expected datasource prometheus"]
    return []


def lint_query_variables(dashboard: dict) -> list[str]:
    problems = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        if variable.get("datasource") != DATASOURCE:
            problems.append(f"variable {variable['name']}: datasource {variable.get('datasource')}")
        if not re.fullmatch(r"label_values\(.+, \w+\)", variable["query"]):
            problems.append(f"variable {variable['name']}: not a label_values query: {variable['query']}")
    return problems


def lint_unit_and_description(dashboard: dict) -> list[str]:
    problems = []
    for panel in panels_of(dashboard):
        if not panel["fieldConfig"]["defaults"].get("unit"):
            problems.append(f"{panel['title']}: no unit")
        if not panel.get("description"):
            problems.append(f"{panel['title']}: no description")
    return problems


def lint_panel_types(dashboard: dict) -> list[str]:
    return [f"{p['title']}: panel type {p['type']}" for p in panels_of(dashboard) if p["type"] not in ALLOWED_PANEL_TYPES]


def lint_editable(dashboard: dict) -> list[str]:
    return [] if dashboard.get("editable") is False else [f"editable is {dashboard.get('editable')}"]


def lint_schema_version(dashboard: dict) -> list[str]:
    return [] if dashboard["schemaVersion"] >= 39 else [f"schemaVersion {dashboard['schemaVersion']} < 39"]


def lint_datasource_objects(dashboard: dict) -> list[str]:
    problems = [f"{p['title']}: panel datasource {p.get('datasource')}"
                for p in panels_of(dashboard) if p.get("datasource") != DATASOURCE]
    problems += [f"{p['title']} {t['refId']}: target datasource {t.get('datasource')}"
                 for p, t in targets_of(dashboard) if t.get("datasource") != DATASOURCE]
    return problems


def lint_queries_parse(dashboard: dict) -> list[str]:
    problems = []
    for panel, target in targets_of(dashboard):
        try:
            parse(target["expr"])
        except Exception as error:  # promql_parser raises its own error types
            problems.append(f"{panel['title']} {target['refId']}: {error}")
    return problems


def lint_range_windows(dashboard: dict) -> list[str]:
    """Every range is $__rate_interval, or $__range in an instant query, and belongs to rate or increase."""
    problems = []
    for panel, target in targets_of(dashboard):
        where = f"{panel['title']} {target['refId']}"
        for window in re.findall(r"\[([^\]]*)\]", target["expr"]):
            if window == "$__range" and not target["instant"]:
                problems.append(f"{where}: $__range in a range query")
            elif window not in ("$__rate_interval", "$__range"):
                problems.append(f"{where}: range [{window}] is not $__rate_interval")
        for name, function, node in selectors(parse(target["expr"])):
            if function is None and isinstance(node, promql_parser.MatrixSelector):
                problems.append(f"{where}: range selector of {name} outside rate/increase")
            elif function in GAUGE_RANGE_FUNCTIONS and not target["instant"]:
                # avg_over_time and its kin summarize the whole time range ($__range) in an instant query.
                problems.append(f"{where}: {function} of {name} in a range query")
    return problems


def lint_counters_in_rate(dashboard: dict) -> list[str]:
    problems = []
    for panel, target in targets_of(dashboard):
        for name, function, _ in selectors(parse(target["expr"])):
            if name.endswith(COUNTER_SUFFIXES) and function not in RANGE_FUNCTIONS:
                problems.append(f"{panel['title']} {target['refId']}: counter {name} outside rate/increase")
    return problems


def lint_unique_ids_and_layout(dashboard: dict) -> list[str]:
    problems = []
    ids = [p["id"] for p in panels_of(dashboard)]
    if len(ids) != len(set(ids)):
        problems.append(f"duplicate panel ids {ids}")
    cells = {}
    for panel in panels_of(dashboard):
        pos = panel["gridPos"]
        if pos["x"] + pos["w"] > 24:
            problems.append(f"{panel['title']}: wider than the grid")
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                if (x, y) in cells:
                    problems.append(f"{panel['title']} overlaps {cells[(x, y)]}")
                    break
                cells[(x, y)] = panel["title"]
            else:
                continue
            break
        ref_ids = [t["refId"] for t in panel.get("targets", [])]
        if len(ref_ids) != len(set(ref_ids)):
            problems.append(f"{panel['title']}: duplicate refIds {ref_ids}")
    return problems


LINT_RULES = [
    lint_datasource_variable,
    lint_query_variables,
    lint_unit_and_description,
    lint_panel_types,
    lint_editable,
    lint_schema_version,
    lint_datasource_objects,
    lint_queries_parse,
    lint_range_windows,
    lint_counters_in_rate,
    lint_unique_ids_and_layout,
]


@pytest.mark.parametrize("rule", LINT_RULES, ids=lambda rule: rule.__name__.removeprefix("lint_"))
@pytest.mark.parametrize("file_name", DASHBOARD_FILES)
def test_dashboard_lint(file_name, rule):
    assert rule(DASHBOARDS[file_name]) == []


@pytest.mark.parametrize("file_name", DASHBOARD_FILES)
def test_uid_and_variables(file_name):
    dashboard = DASHBOARDS[file_name]

    assert dashboard["uid"] == file_name.removesuffix(".json")
    assert [v["name"] for v in dashboard["templating"]["list"]] == EXPECTED_VARIABLES[file_name]


# The lint rules must reject what they are meant to catch.
BAD_EXPRESSIONS = [
    (lint_range_windows, "rate(slawatch_probes_total[5m])", False),
    (lint_range_windows, "increase(slawatch_probes_total[$__range])", False),
    (lint_range_windows, "avg_over_time(slawatch_probe_success[$__rate_interval])", False),
    (lint_counters_in_rate, "sum(slawatch_probes_total)", False),
    (lint_counters_in_rate, "slawatch_ticket_first_response_seconds_bucket", True),
    (lint_queries_parse, "sum by (service (slawatch_probe_success)", True),
]


@pytest.mark.parametrize(("rule", "expr", "instant"), BAD_EXPRESSIONS)
def test_lint_rejects_bad_query(rule, expr, instant):
    dashboard = {"panels": [{"title": "bad", "targets": [{"refId": "A", "expr": expr, "instant": instant}]}]}

    assert len(rule(dashboard)) == 1


# --- 4. locales -------------------------------------------------------------------


ZH_DASHBOARDS = build_dashboards(with_locale(DEFAULT_CONFIG, "zh-CN"))
TEXT_KEYS = {"title", "description", "label", "text", "displayName", "legendFormat"}


def test_zh_cn_titles_are_chinese():
    assert ZH_DASHBOARDS["slawatch-overview.json"]["title"] == "slawatch 服务质量"
    assert ZH_DASHBOARDS["slawatch-slo.json"]["title"] == "slawatch SLO 与错误预算"
    assert ZH_DASHBOARDS["slawatch-support.json"]["title"] == "slawatch 客服响应"
    for dashboard in ZH_DASHBOARDS.values():
        for panel in panels_of(dashboard):
            assert re.search(r"[\u4e00-\u9fff]", panel["title"]), panel["title"]
            assert re.search(r"[\u4e00-\u9fff]", panel["description"]), panel["title"]


@pytest.mark.parametrize("file_name", DASHBOARD_FILES)
def test_locales_differ_only_in_text(file_name):
    paths = text_paths(DASHBOARDS[file_name], ZH_DASHBOARDS[file_name])

    assert paths, "the zh-CN dashboard has no translated text"
    for path in paths:
        assert path[-1] in TEXT_KEYS or "renameByName" in path, f"non-text string differs at {path}"


# --- 5. metric names ----------------------------------------------------------------


def known_metric(name: str) -> bool:
    constants = {value for key, value in vars(names).items() if key.isupper() and isinstance(value, str)}
    plain = {value for value in constants if "{" not in value}
    histogram_series = {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_count", "_sum")}
    templates = [re.escape(value).replace(re.escape("{window}"), r"(\d+(ms|[smhdwy]))+")
                 for value in constants if "{window}" in value]
    return (
        name in plain
        or name in histogram_series
        or name == "ALERTS"
        or name.startswith("probe_")
        or any(re.fullmatch(template, name) for template in templates)
    )


@pytest.mark.parametrize("file_name", DASHBOARD_FILES)
def test_metric_names_exist_in_names_module(file_name):
    queried = set()
    for _, target in targets_of(DASHBOARDS[file_name]):
        queried |= {name for name, _, _ in selectors(parse(target["expr"]))}
    for variable in DASHBOARDS[file_name]["templating"]["list"]:
        match = re.fullmatch(r"label_values\((\w[\w:]*)", variable["query"].split("{")[0].split(",")[0])
        if match:
            queried.add(match.group(1))

    assert queried, "no metric names found"
    assert sorted(name for name in queried if not known_metric(name)) == []


def test_known_metric_rejects_unknown_names():
    assert not known_metric("slawatch_probe_successes")
    assert not known_metric("slo:sli_error:ratio_rate")
    assert known_metric("slo:sli_error:ratio_rate1h30m")


# --- config drives the queries --------------------------------------------------------


def all_exprs(dashboard: dict) -> list[str]:
    return [target["expr"] for _, target in targets_of(dashboard)]


def custom_config() -> Config:
    return parse_config({
        "modules": {"http_2xx": {"prober": "http", "timeout": "5s"}},
        "targets": [{"service": "web", "url": "https://127.0.0.1:8443/", "interval": "1m"}],
        "alerting": {"burn_windows": [
            {"severity": "page", "long": "2h", "short": "10m", "factor": 10},
            {"severity": "ticket", "long": "1d", "short": "2h", "factor": 2},
        ]},
        "slos": [
            {"name": "web.availability", "service": "web", "sli": "probe_availability", "objective": 99.5, "window": "7d"},
            {"name": "web-slow", "service": "web", "sli": "probe_latency", "threshold": "1s", "objective": 90},
            {"name": "email-response", "service": "support", "sli": "ticket_first_response", "threshold": "30m",
             "objective": 90, "channel": "email"},
        ],
    })


def test_slo_windows_come_from_config():
    exprs = all_exprs(build_dashboards(custom_config())["slawatch-slo.json"])
    joined = "\n".join(exprs)

    assert "slo:burn_rate:ratio_rate2h{" in joined
    assert "slo:burn_rate:ratio_rate1h{" not in joined
    assert "slo:burn_rate:ratio_rate1d{" not in joined
    assert 'slo:sli_error:ratio_rate7d{service=~"$service", slo=~"$slo", slo=~"web\\\\.availability"}' in joined
    assert 'slo:sli_error:ratio_rate30d{service=~"$service", slo=~"$slo", slo=~"web-slow|email-response"}' in joined


def test_support_threshold_comes_from_config():
    dashboard = build_dashboards(custom_config())["slawatch-support.json"]
    exprs = "\n".join(all_exprs(dashboard))
    titles = [panel["title"] for panel in panels_of(dashboard)]

    assert 'le="1800.0"' in exprs
    assert 'le="3600.0"' not in exprs
    assert "Answered within 30m" in titles


def test_default_support_threshold_is_one_hour():
    dashboard = DASHBOARDS["slawatch-support.json"]
    stat = next(p for p in panels_of(dashboard) if p["title"] == "Answered within 1h")

    assert 'le="3600.0"' in stat["targets"][0]["expr"]
    assert stat["fieldConfig"]["defaults"]["thresholds"]["steps"][1] == {"color": "green", "value": 0.95}


def test_availability_threshold_is_lowest_objective():
    dashboard = build_dashboards(custom_config())["slawatch-overview.json"]
    stat = panels_of(dashboard)[0]

    assert stat["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"] == 0.995


def test_rendered_json_is_sorted_and_unescaped():
    text = render_dashboard(ZH_DASHBOARDS["slawatch-overview.json"])

    assert "服务质量" in text
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def edge_configs() -> dict[str, Config]:
    return {
        "custom": custom_config(),
        "empty": parse_config({}),
        "no-1h-bucket": parse_config({"tickets": {"first_response_buckets": [300, 900, 7200]}}),
    }


@pytest.mark.parametrize("config_name", ["custom", "empty", "no-1h-bucket"])
def test_edge_configs_pass_lint_and_schema(schemas, config_name):
    dashboards = build_dashboards(edge_configs()[config_name])
    dashboard_schema = validator(schemas, "dashboard.jsonschema.json")

    assert sorted(dashboards) == sorted(DASHBOARD_FILES)
    for file_name, dashboard in dashboards.items():
        assert schema_errors(dashboard_schema, dashboard) == [], file_name
        for rule in LINT_RULES:
            assert rule(dashboard) == [], f"{file_name} {rule.__name__}"


def test_support_without_kpi_omits_share_panels():
    dashboard = build_dashboards(edge_configs()["no-1h-bucket"])["slawatch-support.json"]
    exprs = "\n".join(all_exprs(dashboard))

    assert 'le="' not in exprs
    assert len(panels_of(dashboard)) == len(panels_of(DASHBOARDS["slawatch-support.json"])) - 4
