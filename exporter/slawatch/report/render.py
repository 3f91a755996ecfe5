"""Render a `Report` as HTML and Markdown in one locale, with PNG charts.

The charts carry only service names, numbers and units, so they read the
same in every locale. Their captions come from `TEXT`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import jinja2

from ..i18n import Catalog
from .build import Report

TEMPLATES = Path(__file__).with_name("templates")

TEXT = Catalog({
    "title": {"en": "Service performance report {month}", "zh-CN": "{month} 服务质量月报"},
    "generated": {"en": "Generated {time} UTC from {source}.", "zh-CN": "生成于 {time} UTC，数据来源：{source}。"},
    "times_utc": {"en": "All times are UTC.", "zh-CN": "所有时间均为 UTC。"},
    "section.slo": {"en": "SLA attainment", "zh-CN": "SLA 达成情况"},
    "section.services": {"en": "Availability and latency per service", "zh-CN": "各服务的可用性与延迟"},
    "section.locations": {"en": "Per probe location", "zh-CN": "按探测位置"},
    "section.worst": {"en": "Worst periods and what moved", "zh-CN": "最差时段及耗时变化环节"},
    "section.incidents": {"en": "Incidents", "zh-CN": "故障事件"},
    "section.support": {"en": "Customer support", "zh-CN": "客户支持"},
    "section.certs": {"en": "Certificates and TLS", "zh-CN": "证书与 TLS"},
    "section.mom": {"en": "Change from {previous}", "zh-CN": "与 {previous} 相比的变化"},
    "chart.availability": {"en": "Availability against the objective", "zh-CN": "可用性与目标对比"},
    "chart.daily": {"en": "Daily availability", "zh-CN": "每日可用性"},
    "chart.latency": {"en": "Latency p50 and p90 by location", "zh-CN": "各探测位置的 p50 与 p90 延迟"},
    "col.slo": {"en": "SLO", "zh-CN": "SLO"},
    "col.service": {"en": "Service", "zh-CN": "服务"},
    "col.location": {"en": "Location", "zh-CN": "探测位置"},
    "col.objective": {"en": "Objective", "zh-CN": "目标"},
    "col.attained": {"en": "Attained", "zh-CN": "实际"},
    "col.status": {"en": "Status", "zh-CN": "状态"},
    "col.margin": {"en": "Margin", "zh-CN": "差值"},
    "col.budget": {"en": "Error budget spent", "zh-CN": "已用错误预算"},
    "col.coverage": {"en": "Data coverage", "zh-CN": "数据覆盖率"},
    "col.availability": {"en": "Availability", "zh-CN": "可用性"},
    "col.probes": {"en": "Probes", "zh-CN": "探测次数"},
    "col.transfer": {"en": "Transfer p10 / p50", "zh-CN": "传输速度 p10 / p50"},
    "col.period": {"en": "Period", "zh-CN": "时段"},
    "col.errors": {"en": "Failed share", "zh-CN": "失败比例"},
    "col.p90": {"en": "p90 latency", "zh-CN": "p90 延迟"},
    "col.phases": {"en": "Phases: period (month average)", "zh-CN": "各阶段：时段内（月平均）"},
    "col.moved": {"en": "What moved", "zh-CN": "变化环节"},
    "col.alert": {"en": "Alert", "zh-CN": "告警"},
    "col.severity": {"en": "Severity", "zh-CN": "级别"},
    "col.start": {"en": "Start", "zh-CN": "开始"},
    "col.end": {"en": "End", "zh-CN": "结束"},
    "col.duration": {"en": "Duration", "zh-CN": "持续时间"},
    "col.channel": {"en": "Channel", "zh-CN": "渠道"},
    "col.created": {"en": "Created", "zh-CN": "新建"},
    "col.answered": {"en": "Answered", "zh-CN": "已响应"},
    "col.within": {"en": "Within 1 hour (calendar)", "zh-CN": "1 小时内响应（自然时间）"},
    "col.within_business": {"en": "Within 1 hour (business hours)", "zh-CN": "1 小时内响应（工作时间）"},
    "col.first_response": {"en": "First response p50 / p90", "zh-CN": "首次响应 p50 / p90"},
    "col.backlog": {"en": "Unanswered at month end", "zh-CN": "月末未响应"},
    "col.expiry": {"en": "Earliest expiry", "zh-CN": "最早到期"},
    "col.days_left": {"en": "Days left at month end", "zh-CN": "月末剩余天数"},
    "col.tls_failures": {"en": "TLS failures", "zh-CN": "TLS 失败次数"},
    "col.change": {"en": "Change", "zh-CN": "变化"},
    "status.met": {"en": "met", "zh-CN": "达成"},
    "status.missed": {"en": "missed", "zh-CN": "未达成"},
    "status.no_data": {"en": "not measured", "zh-CN": "无数据"},
    "status.partial": {"en": "not judged: data for {coverage} of the month",
                       "zh-CN": "无法判定：仅有当月 {coverage} 的数据"},
    "value.none": {"en": "n/a", "zh-CN": "无"},
    "value.not_measured": {"en": "not measured", "zh-CN": "未测量"},
    "value.not_recorded": {"en": "not recorded", "zh-CN": "未记录"},
    "note.coverage": {
        "en": "{service}: probes ran in {coverage} of the month's hours; its figures cover only those hours.",
        "zh-CN": "{service}：当月仅 {coverage} 的小时有探测数据，其各项数字只反映这些时段。",
    },
    "note.unmeasured": {
        "en": "{service}: no probe data this month, so no availability is reported.",
        "zh-CN": "{service}：本月没有探测数据，因此不报告可用性。",
    },
    "note.decided": {
        "en": "Within 1 hour counts tickets created this month that got a first response within 1 hour, out of "
              "those answered or unanswered for more than 1 hour at the month's end.",
        "zh-CN": "1 小时内响应的比例 = 本月新建且 1 小时内首次响应的工单数 / 月末时已响应或已等待超过 1 小时的工单数。",
    },
    "note.worst": {
        "en": "Hours with failed probes, or with a p90 latency more than 10% above the month's p90, worst first "
              "(at most 3 per service). What moved is the HTTP phase that grew most against its month average; "
              "the phases are averaged over the service's locations.",
        "zh-CN": "列出有探测失败、或 p90 延迟比当月 p90 高出 10% 以上的小时，最差的在前（每个服务最多 3 个）。"
                 "变化环节是相对当月平均值增长最多的 HTTP 阶段；各阶段耗时为该服务各探测位置的平均值。",
    },
    "note.no_incidents": {"en": "No alert fired this month.", "zh-CN": "本月没有触发告警。"},
    "note.no_tickets": {"en": "No tickets this month.", "zh-CN": "本月没有工单。"},
    "note.no_certs": {"en": "No target was probed over TLS this month.", "zh-CN": "本月没有通过 TLS 探测的目标。"},
    "note.business": {
        "en": "Business-hours figures come from the exporter's clock=\"business\" histograms; "
              "\"not recorded\" means the exporter did not record them.",
        "zh-CN": "工作时间口径的数字来自导出器的 clock=\"business\" 直方图；“未记录”表示导出器未记录该数据。",
    },
    "note.percentiles": {
        "en": "Probe percentiles are estimates from histogram buckets; ticket percentiles are exact "
              "(nearest rank) from the ticket store.",
        "zh-CN": "探测延迟分位数由直方图的桶估算；工单分位数由工单库精确计算（最近秩法）。",
    },
})


def _percent(value: float | None, digits: int = 3, none: str = "") -> str:
    return none if value is None else f"{value * 100:.{digits}f}%"


def _seconds(value: float | None, none: str = "") -> str:
    if value is None:
        return none
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.2f} s"
    minutes, seconds = divmod(round(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s"


def _bytes_per_second(value: float | None, none: str = "") -> str:
    if value is None:
        return none
    for unit, size in (("MB/s", 1e6), ("kB/s", 1e3)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B/s"


def _time(value: float) -> str:
    return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%d %H:%M")


def _date(value: float) -> str:
    return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%d")


def render_charts(report: Report, daily: dict[str, list[tuple[float, float]]], directory: Path) -> dict[str, str]:
    """Write the PNG charts into `directory` and return {chart key: file name}."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    # Every key exists, so the templates can test a chart that had no data to draw.
    charts: dict[str, str | None] = {"availability": None, "daily": None, "latency": None}
    measured = [summary for summary in report.services if summary.measured]
    objectives = {slo.service: slo.objective for slo in report.slos if slo.sli == "probe_availability"}

    if measured:
        figure, axes = pyplot.subplots(figsize=(7, 0.5 + 0.45 * len(measured)))
        labels = [summary.service for summary in measured]
        axes.barh(labels, [summary.availability * 100 for summary in measured], color="#3274d9")
        for index, summary in enumerate(measured):
            if summary.service in objectives:
                axes.plot([objectives[summary.service]] * 2, [index - 0.4, index + 0.4], color="#d44a3a")
        lowest = min([summary.availability * 100 for summary in measured] + list(objectives.values()))
        axes.set_xlim(max(0.0, lowest - 1), 100)
        axes.set_xlabel("%")
        figure.tight_layout()
        figure.savefig(directory / "availability.png", dpi=100)
        pyplot.close(figure)
        charts["availability"] = "availability.png"

    if daily:
        figure, axes = pyplot.subplots(figsize=(7, 3))
        for service, points in sorted(daily.items()):
            axes.plot([datetime.fromtimestamp(at - 86400, timezone.utc) for at, _ in points],
                      [value * 100 for _, value in points], marker=".", label=service)
        axes.set_ylabel("%")
        axes.legend(loc="lower left", fontsize="small")
        figure.autofmt_xdate()
        figure.tight_layout()
        figure.savefig(directory / "daily-availability.png", dpi=100)
        pyplot.close(figure)
        charts["daily"] = "daily-availability.png"

    rows = [(f"{summary.service} {location.location}", location.latency)
            for summary in measured for location in summary.locations if location.latency]
    if rows:
        figure, axes = pyplot.subplots(figsize=(7, 0.5 + 0.5 * len(rows)))
        positions = list(range(len(rows)))
        axes.barh([p + 0.2 for p in positions], [latency.get(0.5, 0) for _, latency in rows], height=0.4,
                  label="p50", color="#73bf69")
        axes.barh([p - 0.2 for p in positions], [latency.get(0.9, 0) for _, latency in rows], height=0.4,
                  label="p90", color="#ff9830")
        axes.set_yticks(positions, [label for label, _ in rows])
        axes.set_xlabel("s")
        axes.legend(fontsize="small")
        figure.tight_layout()
        figure.savefig(directory / "latency.png", dpi=100)
        pyplot.close(figure)
        charts["latency"] = "latency.png"
    return charts


def render(report: Report, locale: str, source: str, charts: dict[str, str], template: str) -> str:
    """Render `report` with templates/<template> (report.html.j2 or report.md.j2)."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )

    def text(key: str, **values: object) -> str:
        return TEXT.get(key, locale, **values)

    none = text("value.none")
    environment.filters.update({
        "percent": lambda value, digits=3: _percent(value, digits, none),
        "seconds": lambda value: _seconds(value, none),
        "speed": lambda value: _bytes_per_second(value, none),
        "time": _time,
        "date": _date,
    })
    return environment.get_template(template).render(
        report=report, t=text, charts=charts, locale=locale, source=source,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
    )
