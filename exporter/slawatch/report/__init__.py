"""The monthly service-performance report (`slawatch report --month YYYY-MM`).

`queries` reads Prometheus and the ticket store, `build` turns the results
into numbers, and `render` writes them as HTML and Markdown with PNG charts.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import Config
from . import queries
from .build import Report, build_report
from .queries import Period, Prometheus, ReportError
from .pdf import print_pdf
from .render import render, render_charts

__all__ = ["Period", "Report", "ReportError", "build_report", "write_report"]

logger = logging.getLogger("slawatch.report")


def write_report(config: Config, prometheus_url: str, period: Period, locale: str, output_dir: Path,
                 pdf: bool = False) -> list[Path]:
    """Build the report of `period` and write report-<month>.html and .md into `output_dir`.

    With `pdf`, headless Chromium also prints the HTML to report-<month>.pdf.

    Returns the paths written, charts included. Raises ReportError when
    Prometheus or the ticket store cannot be read.
    """
    prometheus = Prometheus(prometheus_url)
    report = build_report(config, prometheus, period)
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    charts = render_charts(report, queries.daily_availability(prometheus, period), directory)
    paths = [directory / name for name in charts.values() if name]
    for suffix, template in (("html", "report.html.j2"), ("md", "report.md.j2")):
        path = directory / f"report-{period.label}.{suffix}"
        path.write_text(render(report, locale, prometheus_url, charts, template), encoding="utf-8")
        paths.append(path)
    if pdf:
        html = directory / f"report-{period.label}.html"
        paths.append(print_pdf(html, html.with_suffix(".pdf")))
    logger.info("Wrote report month=%s locale=%s dir=%s files=%d", period.label, locale, directory, len(paths))
    return paths
