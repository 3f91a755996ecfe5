"""Chat message text from an Alertmanager webhook payload, cut to a size limit.

The title names the status, severity, alert, service and SLO, in the same
words as the notification templates in alertmanager/templates/slawatch.tmpl.
Each firing or resolved alert becomes one section. When the sections do not
fit the robot's limit, the message keeps as many whole sections as fit and
ends with a line that counts the alerts left out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from ..i18n import Catalog

# A single alert section is cut to this many bytes, so one long description
# cannot push every other alert out of the message.
MAX_SECTION_BYTES = 1500
MAX_TITLE_BYTES = 256

TEXT = Catalog({
    "status.firing": {"en": "FIRING:{count}", "zh-CN": "告警中:{count}"},
    "status.resolved": {"en": "RESOLVED", "zh-CN": "已恢复"},
    "alert.firing": {"en": "[FIRING]", "zh-CN": "[告警中]"},
    "alert.resolved": {"en": "[RESOLVED]", "zh-CN": "[已恢复]"},
    "severity.page": {"en": "PAGE", "zh-CN": "紧急"},
    "severity.ticket": {"en": "TICKET", "zh-CN": "工单"},
    "title": {"en": "[{status}] [{severity}] {alertname}: service {service}, SLO {slo}",
              "zh-CN": "[{status}] [{severity}] {alertname}：服务 {service}，SLO {slo}"},
    "service": {"en": "Service: {value}", "zh-CN": "服务：{value}"},
    "slo": {"en": "SLO: {value}", "zh-CN": "SLO：{value}"},
    "severity": {"en": "Severity: {value}", "zh-CN": "级别：{value}"},
    "team": {"en": "Team: {value}", "zh-CN": "团队：{value}"},
    "started": {"en": "Started: {value}", "zh-CN": "开始时间：{value}"},
    "resolved": {"en": "Resolved: {value}", "zh-CN": "恢复时间：{value}"},
    "runbook": {"en": "Runbook", "zh-CN": "处理手册"},
    "dashboard": {"en": "Dashboard", "zh-CN": "仪表盘"},
    "more": {"en": "… and {count} more alert(s), see Alertmanager: {url}",
             "zh-CN": "…… 另有 {count} 条告警未列出，请查看 Alertmanager：{url}"},
})


@dataclass(frozen=True)
class Markup:
    """The bold text and link syntax of a chat kind."""

    bold: Callable[[str], str]
    link: Callable[[str, str], str]


MARKDOWN = Markup(bold=lambda text: f"**{text}**", link=lambda text, url: f"[{text}]({url})")
PLAIN = Markup(bold=lambda text: text, link=lambda text, url: f"{text}: {url}")


@dataclass(frozen=True)
class ChatMessage:
    title: str
    text: str
    # Alerts left out to keep the message within the robot's size limit.
    omitted: int
    # Whether any text was cut, by leaving out alerts or shortening a section.
    truncated: bool


def truncate_utf8(text: str, max_bytes: int) -> str:
    """Cut `text` to at most `max_bytes` UTF-8 bytes, ending with "…" when cut."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    ellipsis = "…"
    cut = data[: max(0, max_bytes - len(ellipsis.encode("utf-8")))]
    return cut.decode("utf-8", errors="ignore") + ellipsis


def _label(labels: dict, name: str) -> str:
    return str(labels.get(name) or "-")


def _severity_word(severity: str, locale: str) -> str:
    if severity in ("page", "ticket"):
        return TEXT.get(f"severity.{severity}", locale)
    return severity.upper() if locale == "en" else severity


def _format_time(value: object) -> str | None:
    if not isinstance(value, str) or value.startswith("0001-"):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_title(payload: dict, locale: str) -> str:
    """Return the one-line title: status, severity, alert name, service and SLO."""
    common = payload.get("commonLabels") or {}
    alerts = payload.get("alerts") or []
    if payload.get("status") == "firing":
        firing = sum(1 for alert in alerts if alert.get("status") == "firing")
        status = TEXT.get("status.firing", locale, count=firing)
    else:
        status = TEXT.get("status.resolved", locale)
    title = TEXT.get("title", locale, status=status, severity=_severity_word(_label(common, "severity"), locale),
                     alertname=_label(common, "alertname"), service=_label(common, "service"),
                     slo=_label(common, "slo"))
    return truncate_utf8(title, MAX_TITLE_BYTES)


def render_section(alert: dict, locale: str, markup: Markup) -> str:
    """Return the text of one alert: summary, description, labels, times and links."""
    labels = alert.get("labels") or {}
    annotations = alert.get("annotations") or {}
    marker = TEXT.get("alert.firing" if alert.get("status") == "firing" else "alert.resolved", locale)
    summary = annotations.get("summary") or labels.get("alertname") or "-"
    lines = [markup.bold(f"{marker} {summary}")]
    if annotations.get("description"):
        lines.append(str(annotations["description"]))
    lines.append(TEXT.get("service", locale, value=_label(labels, "service")))
    lines.append(TEXT.get("slo", locale, value=_label(labels, "slo")))
    lines.append(TEXT.get("severity", locale, value=_label(labels, "severity")))
    if labels.get("team"):
        lines.append(TEXT.get("team", locale, value=labels["team"]))
    started = _format_time(alert.get("startsAt"))
    if started:
        lines.append(TEXT.get("started", locale, value=started))
    ended = _format_time(alert.get("endsAt"))
    if alert.get("status") == "resolved" and ended:
        lines.append(TEXT.get("resolved", locale, value=ended))
    links = []
    if annotations.get("runbook_url"):
        links.append(markup.link(TEXT.get("runbook", locale), str(annotations["runbook_url"])))
    if annotations.get("dashboard_url"):
        links.append(markup.link(TEXT.get("dashboard", locale), str(annotations["dashboard_url"])))
    if links:
        lines.append(" | ".join(links))
    return "\n".join(str(line) for line in lines)


def build_message(payload: dict, locale: str, markup: Markup, fits: Callable[[str, str], bool]) -> ChatMessage:
    """Render the payload and keep as many alerts as `fits(title, text)` allows.

    Firing alerts come before resolved ones, so a cut drops resolved alerts first.
    Raises ValueError when not even the title and the count line fit.
    """
    title = render_title(payload, locale)
    alerts = [alert for alert in payload.get("alerts") or [] if isinstance(alert, dict)]
    alerts.sort(key=lambda alert: alert.get("status") != "firing")
    sections = []
    shortened = False
    for alert in alerts:
        section = render_section(alert, locale, markup)
        short = truncate_utf8(section, MAX_SECTION_BYTES)
        shortened = shortened or short != section
        sections.append(short)

    url = str(payload.get("externalURL") or "-")
    # Alertmanager leaves out alerts beyond the receiver's max_alerts and counts them.
    dropped = payload.get("truncatedAlerts")
    dropped = dropped if isinstance(dropped, int) and dropped > 0 else 0
    for kept in range(len(sections), -1, -1):
        omitted = len(sections) - kept + dropped
        parts = sections[:kept]
        if omitted:
            parts.append(TEXT.get("more", locale, count=omitted, url=url))
        text = "\n\n".join(parts)
        if fits(title, text):
            return ChatMessage(title, text, omitted, shortened or omitted > 0)
    raise ValueError("the message does not fit the robot's size limit even without any alert")
