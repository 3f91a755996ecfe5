"""Convert Sloth and OpenSLO SLO specs to slawatch `slos:` entries.

Two input formats are read:

- Sloth `version: prometheus/v1` files (github.com/slok/sloth,
  pkg/prometheus/api/v1). Each `sli.events` SLO becomes a `custom_ratio` SLO
  named `<service>-<name>`, as Sloth names its SLO IDs.
- OpenSLO `apiVersion: openslo/v1` documents (github.com/OpenSLO/OpenSLO,
  README "SLO" and "SLI"). Each `SLO` with an Occurrences ratio metric on
  Prometheus counters becomes a `custom_ratio` SLO.

Anything that changes what the SLO measures and has no slawatch equivalent
raises `SpecImportError` naming the file, the key path and the fix. Parts that
only shape alert texts (alert names, annotations, per-severity labels) are
not carried over, and each one is reported as a warning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser
import yaml
from pydantic import ValidationError

from .config import SLO, WINDOW_PLACEHOLDER, _format_validation_error
from .durations import format_duration

SLOTH_VERSION = "prometheus/v1"
OPENSLO_VERSION = "openslo/v1"
# Rolling windows that slawatch can express: OpenSLO units m, h, d and w.
OPENSLO_DURATION = re.compile(r"^(\d+)([mhdw])$")
OPENSLO_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


class SpecImportError(ValueError):
    """A spec file that cannot be converted, with one line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: cannot import:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass
class ImportResult:
    slos: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def import_files(paths: list[str | Path]) -> ImportResult:
    """Convert every SLO in `paths` and return them with the warnings.

    OpenSLO `SLO` documents may refer to `SLI` and `DataSource` documents in
    any of the files. Raises SpecImportError for the first file with a problem.
    """
    documents: list[tuple[str, int, dict]] = []
    for path in paths:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
            loaded = list(yaml.safe_load_all(text))
        except OSError as error:
            raise SpecImportError(source, [f"cannot read the file: {error.strerror}: check the path"]) from None
        except yaml.YAMLError as error:
            raise SpecImportError(source, [f"invalid YAML: {error}"]) from None
        for index, document in enumerate(loaded):
            if document is None:
                continue
            if not isinstance(document, dict):
                raise SpecImportError(source, [f"document {index + 1}: expected a mapping, got {type(document).__name__}"])
            documents.append((source, index, document))

    catalog = _OpenSLOCatalog.from_documents(documents)
    result = ImportResult()
    for source, index, document in documents:
        where = f"document {index + 1}"
        if document.get("version") == SLOTH_VERSION:
            _import_sloth(source, document, result)
        elif document.get("apiVersion") == OPENSLO_VERSION:
            if document.get("kind") == "SLO":
                _import_openslo_slo(source, where, document, catalog, result)
        else:
            found = document.get("version") or document.get("apiVersion")
            raise SpecImportError(source, [
                f"{where}: unsupported spec version {found!r}: use a Sloth `version: {SLOTH_VERSION}` "
                f"file or OpenSLO `apiVersion: {OPENSLO_VERSION}` documents"
            ])

    names = [slo["name"] for slo in result.slos]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SpecImportError(", ".join(map(str, paths)), [f"duplicate SLO names {duplicates}: rename them in the specs"])
    return result


def render_slos(result: ImportResult) -> str:
    """Render the `slos:` section to paste into slawatch.yml."""
    return yaml.safe_dump({"slos": result.slos}, sort_keys=False, allow_unicode=True, width=1000)


# --- helpers ---------------------------------------------------------------


def _validated(source: str, path: str, slo: dict) -> dict:
    """Check `slo` against the slawatch SLO model and return it."""
    try:
        SLO.model_validate(slo)
    except ValidationError as error:
        problems = [f"{path} -> slawatch {problem}" for problem in _format_validation_error(error)]
        raise SpecImportError(source, problems) from None
    return slo


def _split_labels(labels: dict[str, Any], slo: dict, warnings: list[str], where: str) -> None:
    """Move `team` into the SLO's team and the other string labels into its alert labels."""
    for key, value in labels.items():
        if not isinstance(value, str):
            warnings.append(f"{where}.{key}: label value {value!r} is not a string and is not carried over")
        elif key == "team":
            slo["team"] = value
        else:
            slo.setdefault("labels", {})[key] = value


# --- Sloth -----------------------------------------------------------------


def _import_sloth(source: str, spec: dict, result: ImportResult) -> None:
    service = spec.get("service")
    if not isinstance(service, str) or not service:
        raise SpecImportError(source, ["service: required key is missing: add the service name"])
    slos = spec.get("slos")
    if not isinstance(slos, list) or not slos:
        raise SpecImportError(source, ["slos: no SLOs in the file: add at least one under slos:"])

    for index, item in enumerate(slos):
        path = f"slos[{index}]"
        if not isinstance(item, dict):
            raise SpecImportError(source, [f"{path}: expected a mapping, got {type(item).__name__}"])
        result.slos.append(_sloth_slo(source, path, service, spec.get("labels") or {}, item, result.warnings))


def _sloth_slo(source: str, path: str, service: str, service_labels: dict, item: dict, warnings: list[str]) -> dict:
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise SpecImportError(source, [f"{path}.name: required key is missing: add the SLO name"])
    objective = item.get("objective")
    if not isinstance(objective, (int, float)) or not 0 < objective < 100:
        raise SpecImportError(source, [
            f"{path}.objective: {objective!r} does not map: slawatch needs an objective above 0 and below 100 "
            "(100 leaves no error budget to burn)"
        ])

    sli = item.get("sli") or {}
    if "raw" in sli:
        raise SpecImportError(source, [
            f"{path}.sli.raw: a precomputed error ratio does not map, because slawatch counts the events of each "
            "window to ignore windows with too few of them: rewrite it as sli.events with error_query and total_query"
        ])
    if "plugin" in sli:
        raise SpecImportError(source, [
            f"{path}.sli.plugin: Sloth SLI plugins do not map: write the plugin's queries as sli.events"
        ])
    events = sli.get("events")
    if not isinstance(events, dict) or not events.get("error_query") or not events.get("total_query"):
        raise SpecImportError(source, [f"{path}.sli.events: error_query and total_query are required"])

    slo = {
        "name": f"{service}-{name}",
        "service": service,
        "sli": "custom_ratio",
        "objective": float(objective),
        # Sloth's default SLO period.
        "window": "30d",
        "bad_query": " ".join(str(events["error_query"]).split()),
        "total_query": " ".join(str(events["total_query"]).split()),
    }
    if item.get("description"):
        slo["description"] = str(item["description"])
    _split_labels({**service_labels, **(item.get("labels") or {})}, slo, warnings, f"{source}: {path}.labels")

    alerting = item.get("alerting") or {}
    _split_labels(alerting.get("labels") or {}, slo, warnings, f"{source}: {path}.alerting.labels")
    for key in ("name", "annotations", "page_alert", "ticket_alert"):
        if alerting.get(key):
            warnings.append(
                f"{source}: {path}.alerting.{key} is not carried over: slawatch names its alerts "
                "SLOErrorBudgetBurn (severity page and ticket) and writes their texts itself"
            )
    for key in ("infoLabels", "interval"):
        if item.get(key):
            warnings.append(f"{source}: {path}.{key} is not carried over: slawatch has no equivalent")
    return _validated(source, path, slo)


# --- OpenSLO ---------------------------------------------------------------


@dataclass
class _OpenSLOCatalog:
    slis: dict[str, dict]
    data_sources: dict[str, dict]

    @classmethod
    def from_documents(cls, documents: list[tuple[str, int, dict]]) -> "_OpenSLOCatalog":
        slis, data_sources = {}, {}
        for _, _, document in documents:
            if document.get("apiVersion") != OPENSLO_VERSION:
                continue
            name = (document.get("metadata") or {}).get("name")
            if document.get("kind") == "SLI":
                slis[name] = document
            elif document.get("kind") == "DataSource":
                data_sources[name] = document
        return cls(slis, data_sources)


def _import_openslo_slo(source: str, where: str, document: dict, catalog: _OpenSLOCatalog,
                        result: ImportResult) -> None:
    metadata = document.get("metadata") or {}
    name = metadata.get("name")
    path = f"{where} (SLO {name})"
    spec = document.get("spec") or {}

    def fail(key: str, message: str) -> SpecImportError:
        return SpecImportError(source, [f"{path}: {key}: {message}"])

    if not spec.get("service"):
        raise fail("spec.service", "required key is missing: add the service name")

    budgeting = spec.get("budgetingMethod")
    if budgeting != "Occurrences":
        raise fail("spec.budgetingMethod", f"{budgeting!r} does not map: slawatch counts good and bad events, "
                                           "which is budgetingMethod Occurrences")

    windows = spec.get("timeWindow") or [{"duration": "30d", "isRolling": True}]
    if len(windows) != 1:
        raise fail("spec.timeWindow", "exactly one time window is allowed")
    window = windows[0]
    if window.get("calendar") is not None or not window.get("isRolling", False):
        raise fail("spec.timeWindow[0]", "calendar-aligned windows do not map: slawatch windows are rolling "
                                         "(isRolling: true)")
    match = OPENSLO_DURATION.match(str(window.get("duration", "")))
    if not match:
        raise fail("spec.timeWindow[0].duration", f"{window.get('duration')!r} does not map: use minutes, hours, "
                                                  "days or weeks, for example 28d or 4w")
    window_seconds = int(match.group(1)) * OPENSLO_UNITS[match.group(2)]

    objectives = spec.get("objectives") or []
    if len(objectives) != 1:
        raise fail("spec.objectives", f"{len(objectives)} objectives do not map: slawatch has one objective per "
                                      "SLO, so write one SLO document per objective")
    objective = objectives[0]
    if "op" in objective or "value" in objective:
        raise fail("spec.objectives[0]", "op and value (threshold objectives) do not map: use a ratioMetric SLI")
    if objective.get("targetPercent") is not None:
        percent = float(objective["targetPercent"])
    elif objective.get("target") is not None:
        percent = float(objective["target"]) * 100
    else:
        raise fail("spec.objectives[0]", "target or targetPercent is required")

    if spec.get("indicator") is not None:
        indicator = spec["indicator"]
    elif spec.get("indicatorRef"):
        indicator = catalog.slis.get(spec["indicatorRef"])
        if indicator is None:
            raise fail("spec.indicatorRef", f"no SLI named {spec['indicatorRef']!r} in the imported files: "
                                            "pass the file with that SLI document too")
    else:
        raise fail("spec.indicator", "required key is missing: add indicator or indicatorRef")

    queries = _openslo_queries(source, path, indicator, catalog)
    slo = {
        "name": name,
        "service": spec["service"],
        "sli": "custom_ratio",
        "objective": float(f"{percent:.12g}"),
        "window": format_duration(window_seconds),
        **queries,
    }
    if spec.get("description"):
        slo["description"] = str(spec["description"])
    _split_labels(metadata.get("labels") or {}, slo, result.warnings, f"{source}: {path}: metadata.labels")
    if spec.get("alertPolicies"):
        result.warnings.append(
            f"{source}: {path}: spec.alertPolicies are not carried over: slawatch alerts follow "
            "alerting.burn_windows of the slawatch config"
        )
    result.slos.append(_validated(source, path, slo))


def _openslo_queries(source: str, path: str, indicator: dict, catalog: _OpenSLOCatalog) -> dict[str, str]:
    def fail(key: str, message: str) -> SpecImportError:
        return SpecImportError(source, [f"{path}: indicator.spec.{key}: {message}"])

    spec = indicator.get("spec") or {}
    if "thresholdMetric" in spec:
        raise fail("thresholdMetric", "threshold metrics do not map: slawatch needs a ratioMetric of good or "
                                      "bad and total events")
    ratio = spec.get("ratioMetric")
    if not isinstance(ratio, dict):
        raise fail("ratioMetric", "required key is missing: add a ratioMetric with good or bad and total")
    if "raw" in ratio:
        raise fail("ratioMetric.raw", "a precomputed ratio does not map, because slawatch counts the events of "
                                      "each window: use good or bad and total")
    if ratio.get("counter") is not True:
        raise fail("ratioMetric.counter", "only counters (counter: true) map: slawatch takes rate() of the "
                                          "good, bad and total series")
    if ("good" in ratio) == ("bad" in ratio) or "total" not in ratio:
        raise fail("ratioMetric", "exactly one of good or bad, and total, are required")

    queries = {}
    for key in ("good", "bad", "total"):
        if key in ratio:
            queries[f"{key}_query"] = _openslo_rate(fail, f"ratioMetric.{key}", ratio[key], catalog)
    return queries


def _openslo_rate(fail, key: str, metric: dict, catalog: _OpenSLOCatalog) -> str:
    """Return `sum(rate(<selector>[{{.window}}]))` for one OpenSLO Prometheus counter query."""
    source = (metric or {}).get("metricSource") or {}
    source_type = source.get("type")
    if source_type is None and source.get("metricSourceRef"):
        data_source = catalog.data_sources.get(source["metricSourceRef"]) or {}
        source_type = (data_source.get("spec") or {}).get("type")
    if str(source_type).lower() != "prometheus":
        raise fail(f"{key}.metricSource.type", f"{source_type!r} does not map: slawatch reads Prometheus only")
    query = (source.get("spec") or {}).get("query")
    if not isinstance(query, str) or not query.strip():
        raise fail(f"{key}.metricSource.spec.query", "required key is missing: add the PromQL series selector")

    try:
        expr = promql_parser.parse(query)
    except ValueError as error:
        raise fail(f"{key}.metricSource.spec.query", f"{query!r} is not valid PromQL: {error}") from None
    # A counter selector, optionally inside a sum() without grouping.
    if isinstance(expr, promql_parser.AggregateExpr) and str(expr.op) == "sum" and expr.modifier is None:
        expr = expr.expr
    if not isinstance(expr, promql_parser.VectorSelector):
        raise fail(f"{key}.metricSource.spec.query", f"{query!r} does not map: slawatch takes rate() of the "
                                                     "counter, so write a plain series selector such as "
                                                     'http_requests_total{code="200"}')
    selector = str(expr).removesuffix("{}")
    return f"sum(rate({selector}[{WINDOW_PLACEHOLDER}]))"
