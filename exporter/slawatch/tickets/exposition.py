"""Text exposition of the ticket metric families, for the /metrics fast path.

A store with many label combinations yields thousands of histogram samples,
and prometheus_client's generic formatter took about 60 ms for 5,000 of
them (benchmarks/tickets_bench.py, 2-core AMD EPYC VM). The families here
have fixed, valid names, so each distinct label set is escaped once and
cached, and the lines are joined directly.
"""

from __future__ import annotations

from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString


class FamilyRenderer:
    """Render metric families in the Prometheus text format 0.0.4 or in OpenMetrics 1.0 (without # EOF)."""

    def __init__(self) -> None:
        self._labels: dict[tuple, str] = {}

    def render(self, families: list[Metric], openmetrics: bool) -> str:
        lines: list[str] = []
        for family in families:
            name = family.name
            if family.type == "counter" and not openmetrics:
                name += "_total"
            help_text = family.documentation.replace("\\", "\\\\").replace("\n", "\\n")
            if openmetrics:
                help_text = help_text.replace('"', '\\"')
            lines.append(f"# HELP {name} {help_text}\n# TYPE {name} {family.type}\n")
            for sample in family.samples:
                lines.append(f"{sample.name}{self._label_text(sample.labels)} {floatToGoString(sample.value)}\n")
        return "".join(lines)

    def _label_text(self, labels: dict[str, str]) -> str:
        key = tuple(labels.items())
        text = self._labels.get(key)
        if text is None:
            if not labels:
                text = ""
            else:
                pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in key)
                text = "{" + pairs + "}"
            if len(self._labels) > 100000:
                self._labels.clear()
            self._labels[key] = text
        return text


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
