"""The public view of the status data: the JSON document and the HTML page built from it.

Everything shown comes from this view, so the leak rules live in one place:
service names of public targets, configured public text, announcement text,
catalog text and numbers. Target URLs, probe errors and alert annotations
never enter it.
"""

from __future__ import annotations

import re
from datetime import datetime

import jinja2

from ..i18n import LOCALES, Catalog
from .store import DayTotals, Incident
from .tracker import SEVERITY, ServiceStatus, StatusTracker

TEXT = Catalog({
    "title": {"en": "Service status", "zh-CN": "服务状态"},
    "state.operational": {"en": "Operational", "zh-CN": "正常运行"},
    "state.degraded": {"en": "Degraded performance", "zh-CN": "性能下降"},
    "state.partial_outage": {"en": "Partial outage", "zh-CN": "部分中断"},
    "state.major_outage": {"en": "Major outage", "zh-CN": "严重中断"},
    "state.maintenance": {"en": "Under maintenance", "zh-CN": "维护中"},
    "state.no_data": {"en": "No data", "zh-CN": "暂无数据"},
    "overall.operational": {"en": "All systems operational", "zh-CN": "所有服务正常运行"},
    "overall.degraded": {"en": "Some services have degraded performance", "zh-CN": "部分服务性能下降"},
    "overall.partial_outage": {"en": "Partial outage", "zh-CN": "部分服务中断"},
    "overall.major_outage": {"en": "Major outage", "zh-CN": "服务严重中断"},
    "overall.maintenance": {"en": "Maintenance in progress", "zh-CN": "正在维护"},
    "overall.no_data": {"en": "No current data", "zh-CN": "暂无当前数据"},
    "uptime": {"en": "{percent} uptime over the last {days} days", "zh-CN": "最近 {days} 天可用率 {percent}"},
    "uptime.none": {"en": "No measurements in the last {days} days", "zh-CN": "最近 {days} 天无测量数据"},
    # Fewer days with data than the page covers: the percentage is over the measured days only.
    "uptime.partial": {"en": "{percent} uptime over {measured} days with measurements (of the last {days})",
                       "zh-CN": "最近 {days} 天中有测量数据的 {measured} 天可用率 {percent}"},
    "uptime.partial.one": {"en": "{percent} uptime over 1 day with measurements (of the last {days})",
                           "zh-CN": "最近 {days} 天中有测量数据的 1 天可用率 {percent}"},
    "response_time": {"en": "Response time: {value} now, {average} average {span}",
                      "zh-CN": "响应时间：当前 {value}，{span}平均 {average}"},
    "response_time.average": {"en": "Response time: {average} average {span}",
                              "zh-CN": "响应时间：{span}平均 {average}"},
    # The days an average covers: every day of the page, or fewer when the rest have no measurements.
    "span.full": {"en": "over {days} days", "zh-CN": "{days} 天"},
    "span.partial": {"en": "over {measured} days with measurements", "zh-CN": "有测量数据的 {measured} 天"},
    "span.partial.one": {"en": "over 1 day with measurements", "zh-CN": "有测量数据的 1 天"},
    "response_time.none": {"en": "Response time: no successful checks in the last {days} days",
                           "zh-CN": "响应时间：最近 {days} 天没有成功的检测"},
    "days_ago": {"en": "{days} days ago", "zh-CN": "{days} 天前"},
    "today": {"en": "Today", "zh-CN": "今天"},
    "day.tooltip": {"en": "{date}: {percent} available, {probes} checks",
                    "zh-CN": "{date}：可用率 {percent}，共 {probes} 次检测"},
    "day.none": {"en": "{date}: no data", "zh-CN": "{date}：无数据"},
    "incidents": {"en": "Incidents and announcements", "zh-CN": "事件与公告"},
    "incidents.none": {"en": "No incidents or announcements in the last {days} days.",
                       "zh-CN": "最近 {days} 天没有事件或公告。"},
    "kind.incident": {"en": "Incident", "zh-CN": "故障"},
    "kind.maintenance": {"en": "Planned maintenance", "zh-CN": "计划维护"},
    "kind.update": {"en": "Update", "zh-CN": "通知"},
    "kind.report": {"en": "Service report", "zh-CN": "服务报告"},
    "status.ongoing": {"en": "Ongoing", "zh-CN": "处理中"},
    "status.resolved": {"en": "Resolved", "zh-CN": "已解决"},
    "status.scheduled": {"en": "Scheduled", "zh-CN": "已计划"},
    "status.in_progress": {"en": "In progress", "zh-CN": "进行中"},
    "status.completed": {"en": "Completed", "zh-CN": "已完成"},
    "status.posted": {"en": "Posted", "zh-CN": "已发布"},
    "incident.title.degraded": {"en": "Degraded performance", "zh-CN": "性能下降"},
    "incident.title.partial_outage": {"en": "Service disruption", "zh-CN": "服务中断"},
    "incident.title.major_outage": {"en": "Major service outage", "zh-CN": "服务严重中断"},
    "affected": {"en": "Affected: {services}", "zh-CN": "受影响服务：{services}"},
    "all_services": {"en": "all services", "zh-CN": "全部服务"},
    "window": {"en": "{start} to {end}", "zh-CN": "{start} 至 {end}"},
    "since": {"en": "Since {start}", "zh-CN": "开始于 {start}"},
    "duration": {"en": "Duration: {duration}", "zh-CN": "持续时间：{duration}"},
    "hours_minutes": {"en": "{hours} h {minutes} min", "zh-CN": "{hours} 小时 {minutes} 分钟"},
    "minutes": {"en": "{minutes} min", "zh-CN": "{minutes} 分钟"},
    "read_report": {"en": "Read the report", "zh-CN": "查看报告"},
    "more": {"en": "More information", "zh-CN": "详细信息"},
    "updated": {"en": "Updated {time}. Times are in {zone}.", "zh-CN": "更新于 {time}。时间均为 {zone} 时区。"},
    "language": {"en": "中文", "zh-CN": "English"},
    "legend": {"en": "Bar colours: green 99.9% or more, yellow 99% or more, orange 95% or more, red below 95%, "
                     "grey no data.",
               "zh-CN": "色条：绿色表示可用率不低于 99.9%，黄色不低于 99%，橙色不低于 95%，红色低于 95%，灰色表示无数据。"},
})

# Daily bar colours by availability percent, best first.
BAR_LEVELS = ((99.9, "good"), (99.0, "fair"), (95.0, "poor"), (0.0, "bad"))

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("slawatch", "templates"),
                          autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined,
                          trim_blocks=True, lstrip_blocks=True)
_LANGUAGE_RANGE = re.compile(r"^\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([0-9.]+))?\s*$")


def choose_locale(query: str | None, accept_language: str | None, default: str, allow_header: bool) -> str:
    """Pick the page language: ?lang=, then Accept-Language when allowed, then the configured locale."""
    if query in LOCALES:
        return query
    if allow_header and accept_language:
        ranked = []
        for position, part in enumerate(accept_language.split(",")[:20]):
            match = _LANGUAGE_RANGE.match(part)
            if not match:
                continue
            try:
                quality = float(match.group(2)) if match.group(2) else 1.0
            except ValueError:
                continue
            if quality > 0:
                ranked.append((-quality, position, match.group(1).lower()))
        for _, _, tag in sorted(ranked):
            if tag == "zh" or tag.startswith("zh-"):
                return "zh-CN"
            if tag == "en" or tag.startswith("en-"):
                return "en"
            if tag == "*":
                return default
    return default


def _percent(value: float | None) -> str:
    if value is None:
        return "–"
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return f"{text}%"


def _milliseconds(value: float | None) -> str:
    return "–" if value is None else f"{value * 1000:.0f} ms"


def _availability(totals: DayTotals) -> float | None:
    if totals.probes == 0:
        return None
    return 100.0 * (totals.probes - totals.failures) / totals.probes


def _bar_level(availability: float | None) -> str:
    if availability is None:
        return "none"
    return next(level for floor, level in BAR_LEVELS if availability >= floor)


def _overall(states: list[str]) -> str:
    measured = [s for s in states if s in SEVERITY]
    worst = max(measured, key=SEVERITY.__getitem__, default=None)
    if worst is not None and worst != "operational":
        return worst
    if "maintenance" in states:
        return "maintenance"
    return worst or "no_data"


class StatusView:
    """Builds the public status document for one locale."""

    def __init__(self, tracker: StatusTracker, locale: str):
        self.tracker = tracker
        self.locale = locale
        self.status = tracker.status

    def text(self, key: str, **values: object) -> str:
        return TEXT.get(key, self.locale, **values)

    def format_time(self, seconds: float) -> str:
        return datetime.fromtimestamp(seconds, self.tracker.zone).strftime("%Y-%m-%d %H:%M")

    def service_name(self, service: str) -> str:
        names = self.status.services.get(service)
        if names and names.name:
            return names.name.get(self.locale) or next(iter(names.name.values()))
        return service

    def build(self, now: float) -> dict:
        statuses, incidents = self.tracker.snapshot(now)
        days = self.status.retention_days
        title = self.status.title.get(self.locale) if self.status.title else None
        overall = _overall([s.state for s in statuses])
        return {
            "title": title or self.text("title"),
            "locale": self.locale,
            "timezone": self.status.timezone,
            "generated_at": datetime.fromtimestamp(now, self.tracker.zone).isoformat(),
            "updated_text": self.text("updated", time=self.format_time(now), zone=self.status.timezone),
            "overall": {"state": overall, "text": self.text(f"overall.{overall}")},
            "days": days,
            "services": [self._service(status, days) for status in statuses],
            "incidents": [self._incident(incident, now) for incident in incidents],
        }

    def _service(self, status: ServiceStatus, days: int) -> dict:
        total = DayTotals()
        day_items = []
        for day, totals in status.days:
            total.add(totals)
            availability = _availability(totals)
            latency = totals.latency_sum / totals.latency_count if totals.latency_count else None
            tooltip = (self.text("day.tooltip", date=day, percent=_percent(availability), probes=totals.probes)
                       if availability is not None else self.text("day.none", date=day))
            day_items.append({"date": day, "probes": totals.probes, "failures": totals.failures,
                              "availability": availability,
                              "response_time_ms": None if latency is None else round(latency * 1000, 1),
                              "level": _bar_level(availability), "tooltip": tooltip})

        availability = _availability(total)
        average = total.latency_sum / total.latency_count if total.latency_count else None
        config = self.status.services.get(status.service)
        description = config.description.get(self.locale, "") if config and config.description else ""
        return {
            "id": status.service,
            "name": self.service_name(status.service),
            "description": description,
            "state": status.state,
            "state_text": self.text(f"state.{status.state}"),
            "availability": availability,
            "uptime_text": self._uptime_text(availability, sum(1 for item in day_items if item["availability"]
                                                                is not None), days),
            "response_time_ms": None if status.recent_latency is None else round(status.recent_latency * 1000, 1),
            "average_response_time_ms": None if average is None else round(average * 1000, 1),
            "response_text": self._response_text(status.recent_latency, average, sum(
                1 for _, totals in status.days if totals.latency_count), days),
            "recent": {"probes": status.recent_probes, "failures": status.recent_failures},
            "days": day_items,
        }

    def _uptime_text(self, availability: float | None, measured: int, days: int) -> str:
        if availability is None:
            return self.text("uptime.none", days=days)
        if measured >= days:
            return self.text("uptime", percent=_percent(availability), days=days)
        key = "uptime.partial.one" if measured == 1 else "uptime.partial"
        return self.text(key, percent=_percent(availability), measured=measured, days=days)

    def _response_text(self, recent: float | None, average: float | None, measured: int, days: int) -> str:
        if average is None:
            return self.text("response_time.none", days=days)
        if measured >= days:
            span = self.text("span.full", days=days)
        else:
            span = self.text("span.partial.one" if measured == 1 else "span.partial", measured=measured)
        if recent is None:
            return self.text("response_time.average", average=_milliseconds(average), span=span)
        return self.text("response_time", value=_milliseconds(recent), average=_milliseconds(average), span=span)

    def _incident(self, incident: Incident, now: float) -> dict:
        if incident.kind == "incident":
            status = "ongoing" if incident.resolved is None else "resolved"
        elif incident.kind == "maintenance":
            if now < incident.started:
                status = "scheduled"
            elif now >= incident.resolved:
                status = "completed"
            else:
                status = "in_progress"
        else:
            status = "posted"

        title = incident.title.get(self.locale)
        if not title:
            title = self.text(f"incident.title.{incident.state}" if incident.state else "kind.incident")
        names = [self.service_name(s) for s in incident.services]
        separator = "、" if self.locale == "zh-CN" else ", "
        end = incident.resolved if incident.resolved is not None else now

        if incident.kind == "maintenance":
            when = self.text("window", start=self.format_time(incident.started), end=self.format_time(end))
        elif incident.kind == "incident" and incident.resolved is not None:
            when = self.text("window", start=self.format_time(incident.started), end=self.format_time(end))
        elif incident.kind == "incident":
            when = self.text("since", start=self.format_time(incident.started))
        else:
            when = self.format_time(incident.started)

        duration = None
        if incident.kind in ("incident", "maintenance"):
            minutes = max(0, round((end - incident.started) / 60))
            text = (self.text("hours_minutes", hours=minutes // 60, minutes=minutes % 60) if minutes >= 60
                    else self.text("minutes", minutes=minutes))
            duration = self.text("duration", duration=text)

        return {
            "id": incident.id,
            "kind": incident.kind,
            "kind_text": self.text(f"kind.{incident.kind}"),
            "status": status,
            "status_text": self.text(f"status.{status}"),
            "services": list(incident.services),
            # Updates and reports without services concern no service in particular.
            "affected_text": (self.text("affected", services=separator.join(names)) if names
                              else None if incident.kind in ("update", "report")
                              else self.text("affected", services=self.text("all_services"))),
            "title": title,
            "body": incident.body.get(self.locale, ""),
            "link": incident.link,
            "started_at": datetime.fromtimestamp(incident.started, self.tracker.zone).isoformat(),
            "ended_at": (datetime.fromtimestamp(incident.resolved, self.tracker.zone).isoformat()
                         if incident.resolved is not None else None),
            "when_text": when,
            "duration_text": duration,
        }


def render_html(document: dict) -> str:
    """Render the status page; Jinja2 autoescaping covers every value, announcement text included."""
    other = "zh-CN" if document["locale"] == "en" else "en"
    labels = {key: TEXT.get(key, document["locale"]) for key in ("today", "incidents", "language", "read_report",
                                                                  "more", "legend")}
    # The first bar is the day `days - 1` days before today.
    labels["days_ago"] = TEXT.get("days_ago", document["locale"], days=document["days"] - 1)
    labels["incidents_none"] = TEXT.get("incidents.none", document["locale"], days=document["days"])
    return _ENV.get_template("status.html").render(doc=document, other_locale=other, labels=labels)


def public_document(document: dict) -> dict:
    """Drop the fields that only the HTML template uses."""
    services = []
    for service in document["services"]:
        days = [{k: v for k, v in day.items() if k not in ("level", "tooltip")} for day in service["days"]]
        services.append({**service, "days": days})
    return {**document, "services": services}
