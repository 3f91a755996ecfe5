"""Generate the Grafana dashboards of slawatch from the config, with grafanalib.

`write_dashboards` writes three files under `dashboards/`, which Grafana's file
provisioning loads:

- `slawatch-overview.json`: availability, latency, probe status, HTTP phases and
  certificate expiry of the scheduled probes, per service and probe location.
- `slawatch-slo.json`: SLI, error budget, burn rates and firing alerts per SLO,
  read from the recording rules that `slawatch.generate.rules` writes.
- `slawatch-support.json`: ticket first-response times against the SLO
  threshold, open tickets and the ticket intake per channel and priority.

grafanalib 0.7.1 writes the JSON of Grafana 7 (schemaVersion 12, legacy keys,
options that current panels ignore). `_modernize_dashboard` turns its output
into JSON that validates against Grafana's published dashboard and panel
schemas. Titles, descriptions and labels come from `TEXT` in the config's
locale. The output depends only on the config, so the committed files can be
compared byte for byte. docs/dashboards.md describes every panel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafanalib._gen import DashboardEncoder
from grafanalib.core import (
    REFRESH_ON_TIME_RANGE_CHANGE,
    SORT_ALPHA_ASC,
    BarGauge,
    Dashboard,
    DashboardLink,
    GridPos,
    Repeat,
    Stat,
    StateTimeline,
    Table,
    TableSortByField,
    Target,
    Templating,
    Template,
    Time,
    TimePicker,
    TimeSeries,
)

from .. import names
from ..config import SLO, Config
from ..durations import format_duration, format_le
from ..i18n import Catalog

DASHBOARDS_DIR = "dashboards"
OVERVIEW_UID = "slawatch-overview"
SLO_UID = "slawatch-slo"
SUPPORT_UID = "slawatch-support"
SERVICE_UID = "slawatch-service"

# The schemaVersion written into every dashboard. Grafana runs its migrations
# for any version older than its own when it loads a dashboard.
SCHEMA_VERSION = 39
TAG = "slawatch"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24
ALL_VALUE = ".*"

# Alerts shown on the SLO dashboard: SLOErrorBudgetBurn and SLOErrorBudgetExhausted.
SLO_ALERTS = 'alertname=~"SLO.*", alertstate="firing"'
# Prometheus job that scrapes the blackbox-compatible /probe endpoint.
BLACKBOX_JOB = "blackbox"
# The support KPI when no ticket_first_response SLO sets one: a first
# response within 1 hour for 95% of tickets.
DEFAULT_FIRST_RESPONSE_THRESHOLD = 3600.0
DEFAULT_OBJECTIVE = 95.0
# Certificate expiry colors, in days.
CERT_WARNING_DAYS = 30
CERT_CRITICAL_DAYS = 14

PROBE_MATCHERS = 'service=~"$service", location=~"$location"'
SLO_MATCHERS = 'service=~"$service", slo=~"$slo"'
TICKET_MATCHERS = 'channel=~"$channel", priority=~"$priority"'
# Ticket histograms also carry clock="calendar" or clock="business". A series without
# the label matches clock=~".*", so the panels also work on exporters that do not set it.
# $clock takes one value at a time (default business), so no panel adds up both clocks.
CLOCK_MATCHERS = TICKET_MATCHERS + ', clock=~"$clock"'
# Step of the hourly consistency panels, so that the same hour on different days
# can be compared across locations.
HOURLY = "1h"

TEXT = Catalog({
    # Variables and links.
    "variable.datasource": {"en": "Data source", "zh-CN": "数据源"},
    "variable.service": {"en": "Service", "zh-CN": "服务"},
    "variable.location": {"en": "Probe location", "zh-CN": "探测位置"},
    "variable.slo": {"en": "SLO", "zh-CN": "SLO"},
    "variable.channel": {"en": "Channel", "zh-CN": "渠道"},
    "variable.priority": {"en": "Priority", "zh-CN": "优先级"},
    "link.dashboards": {"en": "slawatch dashboards", "zh-CN": "slawatch 仪表板"},
    "state.up": {"en": "Up", "zh-CN": "正常"},
    "state.down": {"en": "Down", "zh-CN": "故障"},
    "state.firing": {"en": "Firing", "zh-CN": "告警中"},
    "legend.objective": {"en": "objective {{slo}}", "zh-CN": "目标 {{slo}}"},

    # Overview dashboard.
    "overview.title": {"en": "slawatch service quality", "zh-CN": "slawatch 服务质量"},
    "overview.description": {
        "en": "Availability, latency, HTTP timing and certificates of the scheduled probes, "
              "per service and probe location.",
        "zh-CN": "按服务和探测位置展示定时探测的可用性、延迟、HTTP 各阶段耗时和证书有效期。",
    },
    "overview.availability_range.title": {"en": "Availability in the time range", "zh-CN": "所选时间范围内的可用性"},
    "overview.availability_range.description": {
        "en": "Share of scheduled probes that succeeded in the selected time range, per service: "
              "1 - failed probes / all probes, summed over locations and modules. "
              "Red below the lowest availability objective, {objective}.",
        "zh-CN": "所选时间范围内定时探测成功的比例（按服务）：1 - 失败次数 / 探测次数，"
                 "汇总所有探测位置和模块。低于最低可用性目标 {objective} 时显示为红色。",
    },
    "overview.probe_status.title": {"en": "Last probe result", "zh-CN": "最近一次探测结果"},
    "overview.probe_status.description": {
        "en": "Result of the most recent scheduled probe per service and location (slawatch_probe_success). "
              "Down if any module of the service failed its last probe.",
        "zh-CN": "每个服务和探测位置最近一次定时探测的结果（slawatch_probe_success）。"
                 "该服务任一模块最近一次探测失败即显示为故障。",
    },
    "overview.probe_age.title": {"en": "Time since last probe", "zh-CN": "距上次探测的时间"},
    "overview.probe_age.description": {
        "en": "Time since the last scheduled probe finished, per service and location. "
              "Orange above twice the longest probe interval ({warning}), red above {critical}, "
              "after which the SLIDataAbsent alert can fire.",
        "zh-CN": "每个服务和探测位置距上次定时探测结束的时间。超过最长探测间隔的两倍（{warning}）"
                 "显示为橙色，超过 {critical} 显示为红色，此后 SLIDataAbsent 告警可能触发。",
    },
    "overview.availability.title": {"en": "Availability", "zh-CN": "可用性"},
    "overview.availability.description": {
        "en": "Share of scheduled probes that succeeded, per service and location, "
              "over a sliding window of $__rate_interval.",
        "zh-CN": "每个服务和探测位置定时探测成功的比例，按 $__rate_interval 滑动窗口计算。",
    },
    "overview.latency.title": {"en": "Probe latency percentiles", "zh-CN": "探测延迟分位数"},
    "overview.latency.description": {
        "en": "p50, p90 and p99 of the scheduled probe duration per service and location, estimated by "
              "histogram_quantile from the slawatch_probe_duration_seconds buckets. A percentile above "
              "the largest bucket bound shows as {largest}.",
        "zh-CN": "每个服务和探测位置定时探测耗时的 p50、p90 和 p99，由 histogram_quantile 根据 "
                 "slawatch_probe_duration_seconds 的桶估算。超过最大桶上界的分位数显示为 {largest}。",
    },
    "overview.success_history.title": {"en": "Probe result history", "zh-CN": "探测结果历史"},
    "overview.success_history.description": {
        "en": "Result of the scheduled probes over time, per service and location. "
              "Down if any module of the service failed.",
        "zh-CN": "定时探测结果随时间的变化（按服务和探测位置）。任一模块失败即显示为故障。",
    },
    "overview.cert_expiry.title": {"en": "Certificate expiry", "zh-CN": "证书剩余有效期"},
    "overview.cert_expiry.description": {
        "en": "Days until the earliest certificate of the chain expires, for targets probed over TLS. "
              "Red below {critical} days, orange below {warning} days.",
        "zh-CN": "通过 TLS 探测的目标，其证书链中最早过期证书的剩余天数。少于 {critical} 天显示为红色，"
                 "少于 {warning} 天显示为橙色。",
    },
    "overview.blackbox.title": {"en": "On-demand probes (/probe)", "zh-CN": "按需探测（/probe）"},
    "overview.blackbox.description": {
        "en": "probe_success of the blackbox-compatible /probe endpoint per target, as scraped by the "
              "Prometheus job \"{job}\". The service and location variables do not apply, because these "
              "series have no such labels.",
        "zh-CN": "Prometheus 任务“{job}”抓取的兼容 blackbox 的 /probe 端点的 probe_success（按目标）。"
                 "这些序列没有 service 和 location 标签，因此不受服务和探测位置变量影响。",
    },
    "overview.phases.title": {"en": "HTTP phases: $service", "zh-CN": "HTTP 各阶段耗时：$service"},
    "overview.phases.description": {
        "en": "Duration of each phase of the last scheduled HTTP probe per location: resolve (DNS), "
              "connect (TCP), tls (handshake), processing (until the first response byte) and transfer "
              "(reading the response). The panel repeats for each selected service.",
        "zh-CN": "每个探测位置最近一次定时 HTTP 探测各阶段的耗时：resolve（DNS 解析）、connect（TCP 连接）、"
                 "tls（握手）、processing（至首个响应字节）和 transfer（读取响应）。每个所选服务各显示一个面板。",
    },

    # SLO dashboard.
    "slo.title": {"en": "slawatch SLOs and error budgets", "zh-CN": "slawatch SLO 与错误预算"},
    "slo.description": {
        "en": "SLI, error budget, burn rates and firing alerts of every configured SLO, "
              "from the slawatch recording rules.",
        "zh-CN": "根据 slawatch 记录规则展示每个已配置 SLO 的 SLI、错误预算、消耗速率和正在触发的告警。",
    },
    "slo.table.title": {"en": "SLO status", "zh-CN": "SLO 状态"},
    "slo.table.description": {
        "en": "One row per SLO, lowest error budget remaining first: the objective, the SLI over the "
              "SLO window ({windows}), and the share of the error budget left.",
        "zh-CN": "每个 SLO 一行，剩余错误预算最少的排在最前：目标、SLO 窗口（{windows}）内的 SLI 以及剩余错误预算比例。",
    },
    "slo.column.service": {"en": "Service", "zh-CN": "服务"},
    "slo.column.team": {"en": "Team", "zh-CN": "团队"},
    "slo.column.objective": {"en": "Objective", "zh-CN": "目标"},
    "slo.column.sli": {"en": "SLI", "zh-CN": "SLI"},
    "slo.column.budget": {"en": "Error budget remaining", "zh-CN": "剩余错误预算"},
    "slo.budget_stat.title": {"en": "Error budget remaining", "zh-CN": "剩余错误预算"},
    "slo.budget_stat.description": {
        "en": "Share of the error budget left in the SLO window, per SLO: 100% is untouched, 0% or less "
              "is exhausted. Red when exhausted, orange below {warning}.",
        "zh-CN": "每个 SLO 在其窗口内剩余的错误预算比例：100% 表示未消耗，0% 及以下表示已耗尽。"
                 "耗尽时显示为红色，低于 {warning} 显示为橙色。",
    },
    "slo.sli_stat.title": {"en": "SLI over the SLO window", "zh-CN": "SLO 窗口内的 SLI"},
    "slo.sli_stat.description": {
        "en": "Share of good events per SLO over its own SLO window ({windows}): 1 - the recorded error ratio.",
        "zh-CN": "每个 SLO 在其自身窗口（{windows}）内的良好事件比例：1 - 记录的错误率。",
    },
    "slo.alert_count.title": {"en": "Firing SLO alerts", "zh-CN": "正在触发的 SLO 告警"},
    "slo.alert_count.description": {
        "en": "Number of firing alerts whose name starts with SLO (SLOErrorBudgetBurn, SLOErrorBudgetExhausted).",
        "zh-CN": "名称以 SLO 开头且正在触发的告警数（SLOErrorBudgetBurn、SLOErrorBudgetExhausted）。",
    },
    "slo.sli.title": {"en": "SLI over {window}", "zh-CN": "{window} 窗口内的 SLI"},
    "slo.sli.description": {
        "en": "Share of good events per SLO over a sliding {window} window, next to the SLO objective.",
        "zh-CN": "每个 SLO 在 {window} 滑动窗口内的良好事件比例，并与 SLO 目标对照。",
    },
    "slo.burn.title": {"en": "Burn rate over {window}", "zh-CN": "{window} 窗口内的消耗速率"},
    "slo.burn.description": {
        "en": "Error ratio over {window} divided by the error budget, per SLO. At 1 the budget lasts "
              "exactly the SLO window. The red line is {factor}, where the {severity} burn-rate alert "
              "for this window fires.",
        "zh-CN": "每个 SLO 在 {window} 内的错误率除以错误预算。为 1 时预算恰好在 SLO 窗口结束时耗尽。"
                 "红线为 {factor}，达到该值时此窗口的 {severity} 级消耗速率告警触发。",
    },
    "slo.budget.title": {"en": "Error budget remaining over time", "zh-CN": "剩余错误预算趋势"},
    "slo.budget.description": {
        "en": "Share of the error budget left in the SLO window, per SLO, over time.",
        "zh-CN": "每个 SLO 在其窗口内剩余错误预算比例随时间的变化。",
    },
    "slo.alerts.title": {"en": "SLO alert history", "zh-CN": "SLO 告警历史"},
    "slo.alerts.description": {
        "en": "Periods in which an alert whose name starts with SLO was firing, per alert, SLO and "
              "severity, from Prometheus' ALERTS series.",
        "zh-CN": "名称以 SLO 开头的告警处于触发状态的时段（按告警、SLO 和级别），数据来自 Prometheus 的 ALERTS 序列。",
    },

    # Support dashboard.
    "support.title": {"en": "slawatch support response", "zh-CN": "slawatch 客服响应"},
    "support.description": {
        "en": "First-response times, open tickets and ticket intake per channel and priority.",
        "zh-CN": "按渠道和优先级展示工单首次响应时间、未关闭工单和新建工单情况。",
    },
    "support.within.title": {"en": "Answered within {threshold}", "zh-CN": "{threshold} 内首次响应率"},
    "support.within.description": {
        "en": "Share of tickets answered in the selected time range whose first response took at most "
              "{threshold}, from the histogram bucket le=\"{le}\". Red below the objective, {objective}.",
        "zh-CN": "所选时间范围内已首次响应的工单中，首次响应不超过 {threshold} 的比例，取自直方图桶 le=\"{le}\"。"
                 "低于目标 {objective} 时显示为红色。",
    },
    "support.created.title": {"en": "Tickets created", "zh-CN": "新建工单数"},
    "support.created.description": {
        "en": "Tickets created in the selected time range.",
        "zh-CN": "所选时间范围内新建的工单数。",
    },
    "support.open.title": {"en": "Open tickets", "zh-CN": "未关闭工单数"},
    "support.open.description": {
        "en": "Tickets that are currently new, open or pending.",
        "zh-CN": "当前处于新建、处理中或等待状态的工单数。",
    },
    "support.oldest.title": {"en": "Oldest unanswered ticket", "zh-CN": "最久未响应工单"},
    "support.oldest.description": {
        "en": "Age of the oldest open ticket without a public agent reply. Orange above {warning}, "
              "red above {threshold}, when the ticket has missed the first-response target.",
        "zh-CN": "尚无客服公开回复的最早未关闭工单的等待时长。超过 {warning} 显示为橙色，"
                 "超过 {threshold} 显示为红色，此时该工单已错过首次响应目标。",
    },
    "support.within_by.title": {
        "en": "Answered within {threshold} by channel and priority",
        "zh-CN": "各渠道和优先级的 {threshold} 内首次响应率",
    },
    "support.within_by.description": {
        "en": "Share of tickets answered in the selected time range whose first response took at most "
              "{threshold}, per channel and priority. Red below the objective, {objective}.",
        "zh-CN": "所选时间范围内已首次响应的工单中，首次响应不超过 {threshold} 的比例（按渠道和优先级）。"
                 "低于目标 {objective} 时显示为红色。",
    },
    "support.first_response.title": {
        "en": "First-response time p50 and p90 by channel",
        "zh-CN": "各渠道首次响应时间 p50 与 p90",
    },
    "support.first_response.description": {
        "en": "Median and 90th percentile of the time to the first public agent reply, per channel, "
              "estimated by histogram_quantile over a sliding window of $__rate_interval. The line has "
              "gaps where no ticket got its first response in the window.",
        "zh-CN": "各渠道客服首次公开回复耗时的中位数和第 90 百分位数，由 histogram_quantile 按 "
                 "$__rate_interval 滑动窗口估算。窗口内没有工单得到首次响应时曲线会中断。",
    },
    "support.within_trend.title": {
        "en": "Answered within {threshold} by channel over time",
        "zh-CN": "各渠道 {threshold} 内首次响应率趋势",
    },
    "support.within_trend.description": {
        "en": "Share of first responses within {threshold} per channel, over a sliding window of "
              "$__rate_interval, next to the objective {objective}.",
        "zh-CN": "各渠道 {threshold} 内首次响应的比例，按 $__rate_interval 滑动窗口计算，并与目标 {objective} 对照。",
    },
    "support.open_trend.title": {"en": "Open tickets by channel", "zh-CN": "各渠道未关闭工单数"},
    "support.open_trend.description": {
        "en": "Tickets that are new, open or pending, per channel, over time.",
        "zh-CN": "各渠道处于新建、处理中或等待状态的工单数随时间的变化。",
    },
    "support.oldest_trend.title": {
        "en": "Oldest unanswered ticket by channel",
        "zh-CN": "各渠道最久未响应工单",
    },
    "support.oldest_trend.description": {
        "en": "Age of the oldest open ticket without a public agent reply, per channel. "
              "The red line is the first-response threshold, {threshold}.",
        "zh-CN": "各渠道尚无客服公开回复的最早未关闭工单的等待时长。红线为首次响应阈值 {threshold}。",
    },
    "support.created_rate.title": {
        "en": "Tickets created per hour by channel",
        "zh-CN": "各渠道每小时新建工单数",
    },
    "support.created_rate.description": {
        "en": "Ticket intake per channel in tickets per hour, over a sliding window of $__rate_interval.",
        "zh-CN": "各渠道的新建工单速率（每小时工单数），按 $__rate_interval 滑动窗口计算。",
    },

    # Overview dashboard: transfer, status codes, failure reasons and consistency.
    "overview.transfer.title": {"en": "Transfer speed p10 and p50", "zh-CN": "传输速度 p10 与 p50"},
    "overview.transfer.description": {
        "en": "10th percentile and median of the response transfer speed (body bytes divided by the "
              "transfer phase) per service and location, from the slawatch_probe_transfer_bytes_per_second "
              "buckets over $__rate_interval. The low percentile shows the slow transfers.",
        "zh-CN": "每个服务和探测位置响应传输速度（响应体字节数除以传输阶段耗时）的第 10 百分位数和中位数，"
                 "根据 slawatch_probe_transfer_bytes_per_second 的桶按 $__rate_interval 估算。低分位数反映慢速传输。",
    },
    "overview.status_codes.title": {"en": "HTTP status codes", "zh-CN": "HTTP 状态码"},
    "overview.status_codes.description": {
        "en": "HTTP responses of the scheduled probes per second, per service and status code, over "
              "$__rate_interval. Probes that got no response (DNS, connect, TLS or timeout failures) "
              "have no status code and appear under failure reasons.",
        "zh-CN": "定时探测每秒收到的 HTTP 响应数（按服务和状态码），按 $__rate_interval 计算。"
                 "未收到响应的探测（DNS、连接、TLS 失败或超时）没有状态码，见失败原因面板。",
    },
    "overview.failure_reasons.title": {"en": "Failure reasons in the time range", "zh-CN": "所选时间范围内的失败原因"},
    "overview.failure_reasons.description": {
        "en": "Failed scheduled probes in the selected time range, per service, location and reason "
              "(dns, connect, tls, http_status, timeout and others).",
        "zh-CN": "所选时间范围内失败的定时探测次数（按服务、探测位置和原因：dns、connect、tls、http_status、timeout 等）。",
    },
    "overview.location_availability.title": {
        "en": "Availability by location in the time range", "zh-CN": "所选时间范围内各探测位置的可用性"},
    "overview.location_availability.description": {
        "en": "Share of successful scheduled probes in the selected time range per location, over the "
              "selected services. A location far below the others points to a regional problem.",
        "zh-CN": "所选时间范围内各探测位置（所选服务汇总）定时探测成功的比例。某位置明显低于其他位置说明存在区域性问题。",
    },
    "overview.location_latency.title": {
        "en": "p90 latency by location in the time range", "zh-CN": "所选时间范围内各探测位置的 p90 延迟"},
    "overview.location_latency.description": {
        "en": "90th percentile of the scheduled probe duration in the selected time range per service "
              "and location, estimated from the histogram buckets.",
        "zh-CN": "所选时间范围内每个服务和探测位置定时探测耗时的第 90 百分位数，根据直方图的桶估算。",
    },
    "overview.hourly.title": {"en": "Hourly p90 latency by location", "zh-CN": "各探测位置每小时 p90 延迟"},
    "overview.hourly.description": {
        "en": "90th percentile of the probe duration per location in steps of one hour. Over several "
              "days the same hour repeats, so the panel shows whether quality depends on the time of day "
              "and whether the locations differ at the same hour.",
        "zh-CN": "各探测位置按每小时计算的探测耗时第 90 百分位数。跨越多天时同一小时反复出现，"
                 "可以看出服务质量是否随一天中的时段变化，以及同一时段各位置是否存在差异。",
    },
    "overview.spread.title": {"en": "Latency spread between locations", "zh-CN": "各探测位置间的延迟差"},
    "overview.spread.description": {
        "en": "Per service, the highest minus the lowest p90 probe duration of its locations over "
              "$__rate_interval. Zero means all locations see the same latency; a single location "
              "shows zero.",
        "zh-CN": "每个服务在各探测位置中最高与最低 p90 探测耗时之差（按 $__rate_interval 计算）。"
                 "为零表示各位置延迟相同；只有一个位置时也为零。",
    },

    # Service drill-down dashboard.
    "service.title": {"en": "slawatch service drill-down", "zh-CN": "slawatch 服务详情"},
    "service.description": {
        "en": "Where the time of a probe goes, per service and location: HTTP phases, latency, "
              "transfer speed, failures and TLS.",
        "zh-CN": "按服务和探测位置展示探测耗时的构成：HTTP 各阶段、延迟、传输速度、失败情况和 TLS。",
    },
    "service.phases_stacked.title": {"en": "HTTP phase breakdown", "zh-CN": "HTTP 各阶段耗时构成"},
    "service.phases_stacked.description": {
        "en": "Average duration of each HTTP phase of the scheduled probes over the selected services "
              "and locations, stacked: resolve (DNS), connect (TCP), tls (handshake), processing (until "
              "the first response byte) and transfer (reading the body). The top of the stack is the "
              "time to the full response; the band that grows in a slow period is where the time went.",
        "zh-CN": "所选服务和探测位置定时探测各 HTTP 阶段的平均耗时（堆叠）：resolve（DNS 解析）、connect（TCP 连接）、"
                 "tls（握手）、processing（至首个响应字节）和 transfer（读取响应体）。堆叠顶部为完整响应耗时；"
                 "慢速时段中变宽的那一层就是耗时增加的环节。",
    },
    "service.phases_location.title": {
        "en": "HTTP phases by location in the time range", "zh-CN": "所选时间范围内各探测位置的 HTTP 阶段耗时"},
    "service.phases_location.description": {
        "en": "Average duration of each HTTP phase per location over the selected time range, so the "
              "locations can be compared phase by phase.",
        "zh-CN": "所选时间范围内各探测位置每个 HTTP 阶段的平均耗时，便于逐阶段比较各位置。",
    },
    "service.latency.title": {"en": "Latency p50 and p99 by location", "zh-CN": "各探测位置的 p50 与 p99 延迟"},
    "service.latency.description": {
        "en": "Median and 99th percentile of the scheduled probe duration per location, estimated "
              "from the histogram buckets over $__rate_interval.",
        "zh-CN": "各探测位置定时探测耗时的中位数和第 99 百分位数，根据直方图的桶按 $__rate_interval 估算。",
    },
    "service.availability.title": {"en": "Availability by location", "zh-CN": "各探测位置的可用性"},
    "service.availability.description": {
        "en": "Share of successful scheduled probes per location over $__rate_interval.",
        "zh-CN": "各探测位置定时探测成功的比例，按 $__rate_interval 计算。",
    },
    "service.transfer.title": {"en": "Transfer speed p50 by location", "zh-CN": "各探测位置的传输速度 p50"},
    "service.transfer.description": {
        "en": "Median response transfer speed per location, from the "
              "slawatch_probe_transfer_bytes_per_second buckets over $__rate_interval.",
        "zh-CN": "各探测位置响应传输速度的中位数，根据 slawatch_probe_transfer_bytes_per_second 的桶按 "
                 "$__rate_interval 估算。",
    },
    "service.failures.title": {"en": "Failures by location and reason", "zh-CN": "各探测位置的失败原因"},
    "service.failures.description": {
        "en": "Failed scheduled probes per second, per location and reason, over $__rate_interval.",
        "zh-CN": "各探测位置每秒失败的定时探测数（按原因），按 $__rate_interval 计算。",
    },
    "service.tls_handshake.title": {"en": "TLS handshake time by location", "zh-CN": "各探测位置的 TLS 握手耗时"},
    "service.tls_handshake.description": {
        "en": "Duration of the TLS handshake of the last scheduled probe per location. Targets probed "
              "over plain HTTP have no tls phase and do not appear.",
        "zh-CN": "各探测位置最近一次定时探测的 TLS 握手耗时。通过明文 HTTP 探测的目标没有 tls 阶段，不会显示。",
    },
    "service.cert.title": {"en": "Certificate expiry by location", "zh-CN": "各探测位置看到的证书剩余有效期"},
    "service.cert.description": {
        "en": "Days until the earliest certificate of the chain that each location received expires. "
              "Different values per location mean the locations reach different certificates. "
              "Red below {critical} days, orange below {warning} days.",
        "zh-CN": "各探测位置收到的证书链中最早过期证书的剩余天数。不同位置数值不同说明各位置访问到了不同的证书。"
                 "少于 {critical} 天显示为红色，少于 {warning} 天显示为橙色。",
    },

    # SLO table columns added to the SLO status table.
    "slo.column.burn": {"en": "Burn rate {window}", "zh-CN": "消耗速率 {window}"},
    "slo.column.alerts": {"en": "Firing alerts", "zh-CN": "触发中的告警"},
    "slo.burn_table.title": {"en": "SLO burn rate and alert state", "zh-CN": "SLO 消耗速率与告警状态"},
    "slo.burn_table.description": {
        "en": "One row per SLO, fastest burn first: the burn rate over {window} (error ratio divided by "
              "the error budget) and the number of its firing SLO alerts, 0 when none fires.",
        "zh-CN": "每个 SLO 一行，消耗最快的排在最前：{window} 窗口内的消耗速率（错误率除以错误预算）"
                 "以及正在触发的 SLO 告警数，无告警时为 0。",
    },

    # Support dashboard: clocks, resolution, backlog and automation.
    "variable.clock": {"en": "Clock", "zh-CN": "计时方式"},
    "support.within_clock.title": {
        "en": "Answered within {threshold} by channel, priority and clock",
        "zh-CN": "各渠道、优先级和计时方式的 {threshold} 内首次响应率",
    },
    "support.within_clock.description": {
        "en": "Share of first responses in the selected time range that took at most {threshold}, per "
              "channel, priority and clock: calendar counts every hour, business counts only the "
              "support calendar's working hours. Red below the objective, {objective}.",
        "zh-CN": "所选时间范围内首次响应不超过 {threshold} 的比例（按渠道、优先级和计时方式）："
                 "calendar 计算全部时间，business 只计算客服日历的工作时间。低于目标 {objective} 时显示为红色。",
    },
    "support.first_response_clock.title": {
        "en": "First-response time p50 and p90 by channel, priority and clock",
        "zh-CN": "各渠道、优先级和计时方式的首次响应时间 p50 与 p90",
    },
    "support.first_response_clock.description": {
        "en": "Median and 90th percentile of the first-response time in the selected time range per "
              "channel, priority and clock, estimated from the histogram buckets.",
        "zh-CN": "所选时间范围内各渠道、优先级和计时方式首次响应时间的中位数和第 90 百分位数，根据直方图的桶估算。",
    },
    "support.resolution.title": {
        "en": "Resolution time p50 and p90 by channel, priority and clock",
        "zh-CN": "各渠道、优先级和计时方式的解决时间 p50 与 p90",
    },
    "support.resolution.description": {
        "en": "Median and 90th percentile of the time from creation to the final resolution, in the "
              "selected time range per channel, priority and clock, from slawatch_ticket_full_resolution_seconds.",
        "zh-CN": "所选时间范围内各渠道、优先级和计时方式从创建到最终解决耗时的中位数和第 90 百分位数，"
                 "数据来自 slawatch_ticket_full_resolution_seconds。",
    },
    "support.unanswered.title": {"en": "Unanswered tickets", "zh-CN": "未响应工单数"},
    "support.unanswered.description": {
        "en": "Open tickets that have no first response yet: the first-response backlog.",
        "zh-CN": "尚未首次响应的未关闭工单数，即首次响应积压。",
    },
    "support.automation.title": {"en": "First answered by automation", "zh-CN": "由自动化首次响应的比例"},
    "support.automation.description": {
        "en": "Share of the first responses in the selected time range that came from automation (for "
              "example an auto-reply or a bot) instead of a person, per channel.",
        "zh-CN": "所选时间范围内首次响应来自自动化（如自动回复或机器人）而非人工的比例（按渠道）。",
    },
    "support.backlog_trend.title": {"en": "Backlog by channel", "zh-CN": "各渠道积压工单"},
    "support.backlog_trend.description": {
        "en": "Open tickets (solid) and open tickets without a first response (unanswered) per channel "
              "over time.",
        "zh-CN": "各渠道未关闭工单数与其中尚未首次响应的工单数（unanswered）随时间的变化。",
    },
})


# --- public API --------------------------------------------------------------


def build_dashboards(config: Config) -> dict[str, dict]:
    """Build the dashboards of `config` and return them as JSON dicts keyed by file name."""
    builders = {
        f"{OVERVIEW_UID}.json": _overview_dashboard,
        f"{SLO_UID}.json": _slo_dashboard,
        f"{SUPPORT_UID}.json": _support_dashboard,
        f"{SERVICE_UID}.json": _service_dashboard,
    }
    dashboards = {}
    for file_name, build in builders.items():
        dashboard = build(config, _Context(config.global_.locale))
        dashboards[file_name] = _modernize_dashboard(dashboard)
    return dashboards


def render_dashboard(dashboard: dict) -> str:
    """Serialize one dashboard the way `write_dashboards` writes it."""
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_dashboards(config: Config, output_dir: Path) -> list[Path]:
    """Write every dashboard to `output_dir/dashboards/` and return the paths written."""
    directory = Path(output_dir) / DASHBOARDS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for file_name, dashboard in sorted(build_dashboards(config).items()):
        path = directory / file_name
        path.write_text(render_dashboard(dashboard), encoding="utf-8")
        paths.append(path)
    return paths


# --- building blocks -----------------------------------------------------------


class _Context:
    """The locale of the texts and the grid position of the next panel."""

    def __init__(self, locale: str):
        self.locale = locale
        self.x = 0
        self.y = 0
        self.row_height = 0

    def text(self, key: str, **values: object) -> str:
        return TEXT.get(key, self.locale, **values)

    def place(self, width: int, height: int) -> GridPos:
        """Return the position of a panel placed right of the previous one, or on a new row."""
        if self.x + width > GRID_WIDTH:
            self.x = 0
            self.y += self.row_height
            self.row_height = 0
        position = GridPos(h=height, w=width, x=self.x, y=self.y)
        self.x += width
        self.row_height = max(self.row_height, height)
        return position


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel and its legend template."""

    expr: str
    legend: str = ""
    # Minimum step of the query, such as "1h"; empty for the panel's default.
    interval: str = ""


def _targets(queries: list[Query], instant: bool, table: bool = False) -> list[Target]:
    return [
        Target(
            expr=query.expr,
            legendFormat=query.legend,
            interval=query.interval,
            refId=chr(ord("A") + index),
            instant=instant,
            format="table" if table else "time_series",
            datasource=DATASOURCE,
        )
        for index, query in enumerate(queries)
    ]


def _steps(base_color: str, *steps: tuple[float, str]) -> list[dict]:
    """Return threshold steps: `base_color` from -Infinity, then (value, color) pairs."""
    return [{"color": base_color, "value": None}] + [{"color": color, "value": value} for value, color in steps]


def _value_mappings(mapping: dict[str, tuple[str, str]]) -> list[dict]:
    """Return one Grafana value mapping for {value: (text, color)}."""
    options = {
        value: {"text": text, "color": color, "index": index}
        for index, (value, (text, color)) in enumerate(mapping.items())
    }
    return [{"type": "value", "options": options}]


def _up_down_mappings(context: _Context) -> list[dict]:
    return _value_mappings({
        "0": (context.text("state.down"), "red"),
        "1": (context.text("state.up"), "green"),
    })


def _legend(display_mode: str = "list", placement: str = "bottom", show: bool = True) -> dict:
    return {"displayMode": display_mode, "placement": placement, "showLegend": show, "calcs": []}


def _reduce_last() -> dict:
    return {"calcs": ["lastNotNull"], "fields": "", "values": False}


def _panel_texts(context: _Context, key: str, values: dict[str, object]) -> dict[str, str]:
    return {
        "title": context.text(f"{key}.title", **values),
        "description": context.text(f"{key}.description", **values),
    }


def _timeseries(context: _Context, key: str, queries: list[Query], unit: str, width: int, height: int = 8,
                values: dict[str, object] | None = None, thresholds: list[dict] | None = None,
                threshold_line: bool = False, min_value: int | None = None, max_value: int | None = None,
                repeat: Repeat | None = None, stacked: bool = False) -> TimeSeries:
    return TimeSeries(
        **_panel_texts(context, key, values or {}),
        dataSource=DATASOURCE,
        targets=_targets(queries, instant=False),
        gridPos=context.place(width, height),
        unit=unit,
        valueMin=min_value,
        valueMax=max_value,
        thresholds=thresholds or _steps("green"),
        thresholdsStyleMode="line" if threshold_line else "off",
        showPoints="never",
        tooltipMode="multi",
        tooltipSort="desc",
        legendDisplayMode="table",
        legendCalcs=["lastNotNull", "min", "max"],
        repeat=repeat or Repeat(),
        stacking={"mode": "normal", "group": "A"} if stacked else {},
        fillOpacity=60 if stacked else 10,
        maxDataPoints=None,
        extraJson={"options": {"legend": {"showLegend": True}}},
    )


def _stat(context: _Context, key: str, queries: list[Query], unit: str, width: int, height: int = 5,
          values: dict[str, object] | None = None, thresholds: list[dict] | None = None,
          mappings: list[dict] | None = None, color_mode: str = "value", decimals: int | None = None) -> Stat:
    return Stat(
        **_panel_texts(context, key, values or {}),
        dataSource=DATASOURCE,
        targets=_targets(queries, instant=True),
        gridPos=context.place(width, height),
        format=unit,
        decimals=decimals,
        thresholds=thresholds or _steps("green"),
        mappings=mappings or [],
        noValue=None,
        colorMode=color_mode,
        graphMode="none",
        reduceCalc="lastNotNull",
        maxDataPoints=None,
        extraJson={
            "fieldConfig": {"defaults": {"color": {"mode": "thresholds"}}},
            "options": {"wideLayout": True, "showPercentChange": False, "percentChangeColorMode": "standard"},
        },
    )


def _bar_gauge(context: _Context, key: str, queries: list[Query], unit: str, width: int, height: int = 8,
               values: dict[str, object] | None = None, thresholds: list[dict] | None = None,
               min_value: float | None = None, max_value: float | None = None) -> BarGauge:
    defaults: dict[str, Any] = {"unit": unit, "color": {"mode": "thresholds"}}
    if min_value is not None:
        defaults["min"] = min_value
    if max_value is not None:
        defaults["max"] = max_value
    return BarGauge(
        **_panel_texts(context, key, values or {}),
        dataSource=DATASOURCE,
        targets=_targets(queries, instant=True),
        gridPos=context.place(width, height),
        displayMode="gradient",
        orientation="horizontal",
        format=unit,
        thresholds=thresholds or _steps("green"),
        maxDataPoints=None,
        extraJson={
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {
                "displayMode": "gradient",
                "valueMode": "color",
                "namePlacement": "auto",
                "showUnfilled": True,
                "sizing": "auto",
                "minVizWidth": 8,
                "minVizHeight": 16,
                "maxVizHeight": 300,
                "legend": _legend(show=False),
                "reduceOptions": _reduce_last(),
                "orientation": "horizontal",
            },
        },
    )


def _state_timeline(context: _Context, key: str, queries: list[Query], unit: str, width: int,
                    mappings: list[dict], height: int = 8, values: dict[str, object] | None = None) -> StateTimeline:
    return StateTimeline(
        **_panel_texts(context, key, values or {}),
        dataSource=DATASOURCE,
        targets=_targets(queries, instant=False),
        gridPos=context.place(width, height),
        mappings=mappings,
        thresholds=_steps("text"),
        showValue="never",
        maxDataPoints=None,
        extraJson={
            "fieldConfig": {"defaults": {"unit": unit}},
            "options": {"legend": _legend(show=False), "tooltip": {"mode": "single", "sort": "none"}},
        },
    )


# --- shared config facts ---------------------------------------------------------


def _percent(objective: float) -> str:
    """Format an objective given in percent, such as 95 or 99.9."""
    return f"{objective:g}%"


def _slo_windows(config: Config) -> list[float]:
    """Return the distinct SLO windows, shortest first, or the default SLO window when there are no SLOs."""
    windows = sorted({slo.window for slo in config.slos})
    return windows or [SLO.model_fields["window"].default]


def _paging_windows(config: Config) -> list[tuple[float, float]]:
    """Return (long window, factor) of each page-severity burn window, shortest window first.

    Two page windows with the same long window keep the larger factor, which is
    the one that fires first.
    """
    factors: dict[float, float] = {}
    for window in config.alerting.burn_windows:
        if window.severity == "page":
            factors[window.long] = max(factors.get(window.long, 0.0), window.factor)
    return sorted(factors.items())


def _regex_alternatives(values: list[str]) -> str:
    # Config label values contain only letters, digits, '_', '.' and '-'. The dot is the
    # only regex metacharacter among them, so it gets a backslash, doubled inside the PromQL string.
    return "|".join(value.replace(".", "\\\\.") for value in values)


def _sli_error_over_slo_window(config: Config) -> str:
    """Return a vector of each SLO's error ratio over its own SLO window.

    The rules record `slo:sli_error:ratio_rate<window>` for the SLO window of each
    SLO (and for the alert windows of all SLOs). With more than one distinct SLO
    window, each window is limited to the SLOs that use it.
    """
    windows = _slo_windows(config)
    if len(windows) == 1:
        return f"{names.SLI_ERROR_RATIO.format(window=format_duration(windows[0]))}{{{SLO_MATCHERS}}}"
    parts = []
    for window in windows:
        slos = [slo.name for slo in config.slos if slo.window == window]
        name = names.SLI_ERROR_RATIO.format(window=format_duration(window))
        parts.append(f'{name}{{{SLO_MATCHERS}, slo=~"{_regex_alternatives(slos)}"}}')
    return " or ".join(parts)


def _availability_objective(config: Config) -> float:
    objectives = [slo.objective for slo in config.slos if slo.sli == "probe_availability"]
    return min(objectives) if objectives else DEFAULT_OBJECTIVE


def _first_response_kpi(config: Config) -> tuple[float, float] | None:
    """Return (threshold in seconds, objective in percent) of the support KPI panels.

    The first ticket_first_response SLO sets them. Without one, the KPI is a first
    response within 1 hour for 95% of tickets, if 1 hour is a bucket bound of
    tickets.first_response_buckets. If it is not, there is no KPI and None is returned.
    """
    for slo in config.slos:
        if slo.sli == "ticket_first_response":
            return slo.threshold, slo.objective
    if DEFAULT_FIRST_RESPONSE_THRESHOLD in config.tickets.first_response_buckets:
        return DEFAULT_FIRST_RESPONSE_THRESHOLD, DEFAULT_OBJECTIVE
    return None


# --- variables and dashboard shell ----------------------------------------------


def _datasource_variable(context: _Context) -> Template:
    return Template(
        name="datasource",
        label=context.text("variable.datasource"),
        query="prometheus",
        type="datasource",
        refresh=1,
        sort=0,
    )


def _query_variable(context: _Context, name: str, query: str, single: str | None = None) -> Template:
    """Build a query variable; with `single`, one value is chosen at a time and `single` is the default."""
    return Template(
        name=name,
        label=context.text(f"variable.{name}"),
        query=query,
        dataSource=DATASOURCE,
        includeAll=single is None,
        multi=single is None,
        allValue=ALL_VALUE,
        default=single or "$__all",
        refresh=REFRESH_ON_TIME_RANGE_CHANGE,
        sort=SORT_ALPHA_ASC,
    )


def _dashboard(context: _Context, uid: str, key: str, variables: list[Template], panels: list,
               time_from: str) -> Dashboard:
    return Dashboard(
        title=context.text(f"{key}.title"),
        description=context.text(f"{key}.description"),
        uid=uid,
        editable=False,
        schemaVersion=SCHEMA_VERSION,
        tags=[TAG],
        timezone="browser",
        refresh="1m",
        graphTooltip=1,
        time=Time(time_from, "now"),
        timePicker=TimePicker(
            refreshIntervals=["30s", "1m", "5m", "15m", "30m", "1h"],
            timeOptions=[],
        ),
        templating=Templating(list=variables),
        links=[DashboardLink(title=context.text("link.dashboards"), tags=[TAG], asDropdown=True,
                             keepTime=True, type="dashboards", icon="external link")],
        panels=panels,
    ).auto_panel_ids()


# --- overview dashboard -------------------------------------------------------------


def _overview_dashboard(config: Config, context: _Context) -> Dashboard:
    probes = f"{names.PROBES_TOTAL}{{{PROBE_MATCHERS}}}"
    failures = f"{names.PROBE_FAILURES_TOTAL}{{{PROBE_MATCHERS}}}"
    reasons = f"{names.PROBE_FAILURE_REASONS_TOTAL}{{{PROBE_MATCHERS}}}"
    buckets = f"{names.PROBE_DURATION}_bucket{{{PROBE_MATCHERS}}}"
    objective = _availability_objective(config)
    longest_interval = max((target.interval for target in config.targets), default=0.0)
    age_warning = 2 * longest_interval
    age_critical = max(config.alerting.absent_for, age_warning)
    largest_bucket = format_duration(config.global_.probe_duration_buckets[-1])
    service_location = "{{service}} {{location}}"

    def availability(by: str, window: str) -> str:
        function = "increase" if window == "$__range" else "rate"
        # A failure counter that does not exist yet counts as zero failures.
        failed = f"{function}({failures}[{window}]) or 0 * {function}({probes}[{window}])"
        return f"1 - sum by ({by}) ({failed}) / sum by ({by}) ({function}({probes}[{window}]))"

    def latency(quantile: str, name: str) -> Query:
        expr = f"histogram_quantile({quantile}, sum by (service, location, le) (rate({buckets}[$__rate_interval])))"
        return Query(expr, f"{name} {service_location}")

    def transfer(quantile: str, name: str) -> Query:
        expr = (f"histogram_quantile({quantile}, sum by (service, location, le) "
                f"(rate({transfer_buckets}[$__rate_interval])))")
        return Query(expr, f"{name} {service_location}")

    transfer_buckets = f"{names.PROBE_TRANSFER_SPEED}_bucket{{{PROBE_MATCHERS}}}"
    p90_by_location = (f"histogram_quantile(0.9, sum by (service, location, le) "
                       f"(rate({buckets}[$__rate_interval])))")
    panels = [
        _stat(context, "overview.availability_range",
              [Query(availability("service", "$__range"), "{{service}}")],
              unit="percentunit", width=8, decimals=3, values={"objective": _percent(objective)},
              thresholds=_steps("red", (objective / 100, "green"))),
        _stat(context, "overview.probe_status",
              [Query(f"min by (service, location) ({names.PROBE_SUCCESS}{{{PROBE_MATCHERS}}})", service_location)],
              unit="bool", width=8, mappings=_up_down_mappings(context), color_mode="background",
              thresholds=_steps("red", (1, "green"))),
        _stat(context, "overview.probe_age",
              [Query(f"time() - max by (service, location) ({names.PROBE_LAST_RUN}{{{PROBE_MATCHERS}}})",
                     service_location)],
              unit="s", width=8,
              values={"warning": format_duration(age_warning), "critical": format_duration(age_critical)},
              thresholds=_steps("green", (age_warning, "orange"), (age_critical, "red"))),
        _timeseries(context, "overview.availability",
                    [Query(availability("service, location", "$__rate_interval"), service_location)],
                    unit="percentunit", width=12, max_value=1,
                    thresholds=_steps("red", (objective / 100, "transparent")), threshold_line=True),
        _timeseries(context, "overview.latency", [latency("0.5", "p50"), latency("0.9", "p90"), latency("0.99", "p99")],
                    unit="s", width=12, values={"largest": largest_bucket}),
        _state_timeline(context, "overview.success_history",
                        [Query(f"min by (service, location) ({names.PROBE_SUCCESS}{{{PROBE_MATCHERS}}})",
                               service_location)],
                        unit="bool", width=12, mappings=_up_down_mappings(context)),
        _bar_gauge(context, "overview.cert_expiry",
                   [Query(f"(min by (service, location) ({names.PROBE_SSL_EXPIRY}{{{PROBE_MATCHERS}}}) - time()) / 86400",
                          service_location)],
                   unit="d", width=12, min_value=0,
                   values={"warning": CERT_WARNING_DAYS, "critical": CERT_CRITICAL_DAYS},
                   thresholds=_steps("red", (CERT_CRITICAL_DAYS, "orange"), (CERT_WARNING_DAYS, "green"))),
        _state_timeline(context, "overview.blackbox",
                        [Query(f'probe_success{{job="{BLACKBOX_JOB}"}}', "{{instance}}")],
                        unit="bool", width=24, height=6, values={"job": BLACKBOX_JOB},
                        mappings=_up_down_mappings(context)),
        _timeseries(context, "overview.transfer", [transfer("0.1", "p10"), transfer("0.5", "p50")],
                    unit="Bps", width=12, min_value=0),
        _timeseries(context, "overview.status_codes",
                    [Query(f"sum by (service, code) (rate({names.PROBE_HTTP_RESPONSES_TOTAL}{{{PROBE_MATCHERS}}}"
                           f"[$__rate_interval]))", "{{service}} {{code}}")],
                    unit="reqps", width=12, min_value=0),
        _bar_gauge(context, "overview.failure_reasons",
                   [Query(f"sum by (service, location, reason) (increase({reasons}[$__range])) > 0",
                          "{{service}} {{location}} {{reason}}")],
                   unit="short", width=12, min_value=0, thresholds=_steps("orange")),
        _bar_gauge(context, "overview.location_availability",
                   [Query(availability("location", "$__range"), "{{location}}")],
                   unit="percentunit", width=12, max_value=1, values={"objective": _percent(objective)},
                   thresholds=_steps("red", (objective / 100, "green"))),
        _bar_gauge(context, "overview.location_latency",
                   [Query(f"histogram_quantile(0.9, sum by (service, location, le) (increase({buckets}[$__range])))",
                          service_location)],
                   unit="s", width=12, min_value=0),
        _timeseries(context, "overview.hourly",
                    [Query(f"histogram_quantile(0.9, sum by (location, le) (rate({buckets}[$__rate_interval])))",
                           "{{location}}", interval=HOURLY)],
                    unit="s", width=12, min_value=0),
        _timeseries(context, "overview.spread",
                    [Query(f"max by (service) ({p90_by_location}) - min by (service) ({p90_by_location})",
                           "{{service}}")],
                    unit="s", width=12, min_value=0),
        # Placed last: Grafana adds one copy per selected service to the right and below.
        _timeseries(context, "overview.phases",
                    [Query(f"max by (location, phase) ({names.PROBE_HTTP_PHASE}{{{PROBE_MATCHERS}}})",
                           "{{location}} {{phase}}")],
                    unit="s", width=12, repeat=Repeat(direction="h", variable="service", maxPerRow=2)),
    ]
    variables = [
        _datasource_variable(context),
        _query_variable(context, "service", f"label_values({names.PROBES_TOTAL}, service)"),
        _query_variable(context, "location", f'label_values({names.PROBES_TOTAL}{{service=~"$service"}}, location)'),
    ]
    return _dashboard(context, OVERVIEW_UID, "overview", variables, panels, time_from="now-6h")


# --- service drill-down dashboard ------------------------------------------------------


def _service_dashboard(config: Config, context: _Context) -> Dashboard:
    probes = f"{names.PROBES_TOTAL}{{{PROBE_MATCHERS}}}"
    failures = f"{names.PROBE_FAILURES_TOTAL}{{{PROBE_MATCHERS}}}"
    reasons = f"{names.PROBE_FAILURE_REASONS_TOTAL}{{{PROBE_MATCHERS}}}"
    buckets = f"{names.PROBE_DURATION}_bucket{{{PROBE_MATCHERS}}}"
    transfer_buckets = f"{names.PROBE_TRANSFER_SPEED}_bucket{{{PROBE_MATCHERS}}}"
    phases = f"{names.PROBE_HTTP_PHASE}{{{PROBE_MATCHERS}}}"
    objective = _availability_objective(config)

    def latency(quantile: str, name: str) -> Query:
        expr = f"histogram_quantile({quantile}, sum by (location, le) (rate({buckets}[$__rate_interval])))"
        return Query(expr, f"{name} {{{{location}}}}")

    failed = f"rate({failures}[$__rate_interval]) or 0 * rate({probes}[$__rate_interval])"
    panels = [
        _timeseries(context, "service.phases_stacked",
                    [Query(f"avg by (phase) ({phases})", "{{phase}}")],
                    unit="s", width=12, min_value=0, stacked=True),
        _bar_gauge(context, "service.phases_location",
                   [Query(f"avg by (location, phase) (avg_over_time({phases}[$__range]))",
                          "{{location}} {{phase}}")],
                   unit="s", width=12, min_value=0),
        _timeseries(context, "service.latency", [latency("0.5", "p50"), latency("0.99", "p99")],
                    unit="s", width=12, min_value=0),
        _timeseries(context, "service.availability",
                    [Query(f"1 - sum by (location) ({failed}) / sum by (location) (rate({probes}[$__rate_interval]))",
                           "{{location}}")],
                    unit="percentunit", width=12, max_value=1,
                    thresholds=_steps("red", (objective / 100, "transparent")), threshold_line=True),
        _timeseries(context, "service.transfer",
                    [Query(f"histogram_quantile(0.5, sum by (location, le) "
                           f"(rate({transfer_buckets}[$__rate_interval])))", "{{location}}")],
                    unit="Bps", width=12, min_value=0),
        _timeseries(context, "service.failures",
                    [Query(f"sum by (location, reason) (rate({reasons}[$__rate_interval]))",
                           "{{location}} {{reason}}")],
                    unit="reqps", width=12, min_value=0),
        _timeseries(context, "service.tls_handshake",
                    [Query(f'max by (location) ({names.PROBE_HTTP_PHASE}{{{PROBE_MATCHERS}, phase="tls"}})',
                           "{{location}}")],
                    unit="s", width=12, min_value=0),
        _bar_gauge(context, "service.cert",
                   [Query(f"(min by (location) ({names.PROBE_SSL_EXPIRY}{{{PROBE_MATCHERS}}}) - time()) / 86400",
                          "{{location}}")],
                   unit="d", width=12, min_value=0,
                   values={"warning": CERT_WARNING_DAYS, "critical": CERT_CRITICAL_DAYS},
                   thresholds=_steps("red", (CERT_CRITICAL_DAYS, "orange"), (CERT_WARNING_DAYS, "green"))),
    ]
    variables = [
        _datasource_variable(context),
        _query_variable(context, "service", f"label_values({names.PROBES_TOTAL}, service)"),
        _query_variable(context, "location", f'label_values({names.PROBES_TOTAL}{{service=~"$service"}}, location)'),
    ]
    return _dashboard(context, SERVICE_UID, "service", variables, panels, time_from="now-6h")


# --- SLO dashboard -----------------------------------------------------------------


def _slo_dashboard(config: Config, context: _Context) -> Dashboard:
    labels = "slo, service, team"
    objective = f"{names.SLO_OBJECTIVE}{{{SLO_MATCHERS}}}"
    remaining = f"{names.SLO_BUDGET_REMAINING}{{{SLO_MATCHERS}}}"
    sli_error = _sli_error_over_slo_window(config)
    windows = ", ".join(format_duration(window) for window in _slo_windows(config))
    budget_warning = 0.25
    firing = f"ALERTS{{{SLO_ALERTS}, {SLO_MATCHERS}}}"

    column_budget = context.text("slo.column.budget")
    paging = _paging_windows(config)
    burn_window = paging[0][0] if paging else _slo_windows(config)[0]
    burn_name = names.SLO_BURN_RATE.format(window=format_duration(burn_window))
    column_burn = context.text("slo.column.burn", window=format_duration(burn_window))
    # Every SLO gets a row in the alert column: 0 when none of its alerts fires.
    alert_state = f"count by ({labels}) ({firing}) or 0 * max by ({labels}) ({objective})"
    table = _slo_table(context, "slo.table", {"windows": windows}, [
        (f"max by ({labels}) ({objective})", context.text("slo.column.objective")),
        (f"1 - max by ({labels}) ({sli_error})", context.text("slo.column.sli")),
        (f"max by ({labels}) ({remaining})", column_budget),
    ], unit="percentunit", decimals=3, sort_column=column_budget, descending=False, height=7)
    # A second table because the published schema types an override's value as an
    # object, so per-column units in one table would not validate.
    burn_table = _slo_table(context, "slo.burn_table", {"window": format_duration(burn_window)}, [
        (f"max by ({labels}) ({burn_name}{{{SLO_MATCHERS}}})", column_burn),
        (alert_state, context.text("slo.column.alerts")),
    ], unit="none", decimals=2, sort_column=column_burn, descending=True, height=7)

    panels = [
        table,
        burn_table,
        _stat(context, "slo.budget_stat", [Query(f"max by (slo) ({remaining})", "{{slo}}")],
              unit="percentunit", width=10, decimals=1, values={"warning": _percent(budget_warning * 100)},
              thresholds=_steps("red", (0, "orange"), (budget_warning, "green"))),
        _stat(context, "slo.sli_stat", [Query(f"1 - max by (slo) ({sli_error})", "{{slo}}")],
              unit="percentunit", width=10, decimals=3, color_mode="none", values={"windows": windows}),
        _stat(context, "slo.alert_count", [Query(f"count({firing}) or vector(0)")],
              unit="none", width=4, thresholds=_steps("green", (1, "red"))),
    ]

    sli_window = paging[0][0] if paging else _slo_windows(config)[0]
    sli_name = names.SLI_ERROR_RATIO.format(window=format_duration(sli_window))
    panels.append(_timeseries(
        context, "slo.sli",
        [Query(f"1 - max by (slo) ({sli_name}{{{SLO_MATCHERS}}})", "{{slo}}"),
         Query(f"max by (slo) ({objective})", context.text("legend.objective"))],
        unit="percentunit", width=12, max_value=1, values={"window": format_duration(sli_window)},
    ))
    panels.append(_timeseries(
        context, "slo.budget", [Query(f"max by (slo) ({remaining})", "{{slo}}")],
        unit="percentunit", width=12, thresholds=_steps("red", (0, "transparent")), threshold_line=True,
    ))
    for window, factor in paging:
        burn_name = names.SLO_BURN_RATE.format(window=format_duration(window))
        panels.append(_timeseries(
            context, "slo.burn", [Query(f"max by (slo) ({burn_name}{{{SLO_MATCHERS}}})", "{{slo}}")],
            unit="none", width=12, min_value=0,
            values={"window": format_duration(window), "factor": f"{factor:g}", "severity": "page"},
            thresholds=_steps("transparent", (factor, "red")), threshold_line=True,
        ))
    panels.append(_state_timeline(
        context, "slo.alerts",
        [Query(f"max by (alertname, slo, severity) ({firing})", "{{alertname}} {{slo}} {{severity}}")],
        unit="none", width=24, mappings=_value_mappings({"1": (context.text("state.firing"), "red")}),
    ))

    variables = [
        _datasource_variable(context),
        _query_variable(context, "service", f"label_values({names.SLO_OBJECTIVE}, service)"),
        _query_variable(context, "slo", f'label_values({names.SLO_OBJECTIVE}{{service=~"$service"}}, slo)'),
    ]
    return _dashboard(context, SLO_UID, "slo", variables, panels, time_from="now-7d")


def _slo_table(context: _Context, key: str, values: dict[str, object], columns: list[tuple[str, str]], unit: str,
               decimals: int, sort_column: str, descending: bool, height: int) -> Table:
    """Return a table with one row per SLO and one column per (query, column title)."""
    index = {"slo": 0, "service": 1, "team": 2}
    rename = {
        "slo": context.text("variable.slo"),
        "service": context.text("slo.column.service"),
        "team": context.text("slo.column.team"),
    }
    for position, (_, title) in enumerate(columns):
        value_column = f"Value #{chr(ord('A') + position)}"
        index[value_column] = 3 + position
        rename[value_column] = title
    return Table(
        **_panel_texts(context, key, values),
        dataSource=DATASOURCE,
        # Aggregating by the rule labels drops __name__, so the merge transformation
        # joins the queries into one row per SLO.
        targets=_targets([Query(expr) for expr, _ in columns], instant=True, table=True),
        gridPos=context.place(24, height),
        unit=unit,
        thresholds=_steps("text"),
        sortBy=[TableSortByField(displayName=sort_column, desc=descending)],
        transformations=[
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True}, "indexByName": index,
                                           "renameByName": rename}},
        ],
        maxDataPoints=None,
        extraJson={
            # No cellOptions, so Grafana picks the "auto" cell type. The published schema
            # rejects every cellOptions object: all its variants accept any cell type, so
            # its oneOf never matches exactly one.
            "fieldConfig": {"defaults": {"decimals": decimals, "custom": {"inspect": False}}},
            "options": {"frameIndex": 0, "cellHeight": "sm"},
        },
    )


# --- support dashboard ---------------------------------------------------------------


def _support_dashboard(config: Config, context: _Context) -> Dashboard:
    created = f"{names.TICKETS_CREATED_TOTAL}{{{TICKET_MATCHERS}}}"
    responses = f"{names.TICKET_FIRST_RESPONSE}_count{{{CLOCK_MATCHERS}}}"
    buckets = f"{names.TICKET_FIRST_RESPONSE}_bucket{{{CLOCK_MATCHERS}}}"
    open_tickets = f"{names.TICKETS_OPEN}{{{TICKET_MATCHERS}}}"
    oldest = f"{names.TICKET_OLDEST_UNANSWERED}{{{CLOCK_MATCHERS}}}"
    kpi = _first_response_kpi(config)

    def within(by: str, window: str) -> str:
        threshold, _ = kpi
        good = f'{names.TICKET_FIRST_RESPONSE}_bucket{{{CLOCK_MATCHERS}, le="{format_le(threshold)}"}}'
        function = "increase" if window == "$__range" else "rate"
        grouping = f" by ({by})" if by else ""
        return (f"sum{grouping} ({function}({good}[{window}])) "
                f"/ sum{grouping} ({function}({responses}[{window}]))")

    clock_buckets = f"{names.TICKET_FIRST_RESPONSE}_bucket{{{CLOCK_MATCHERS}}}"
    resolution_buckets = f"{names.TICKET_RESOLUTION}_bucket{{{CLOCK_MATCHERS}}}"
    first_responses = f"{names.TICKET_FIRST_RESPONSES_TOTAL}{{{TICKET_MATCHERS}}}"
    unanswered = f"{names.TICKETS_UNANSWERED}{{{TICKET_MATCHERS}}}"

    def within_clock() -> str:
        threshold, _ = kpi
        good = f'{names.TICKET_FIRST_RESPONSE}_bucket{{{CLOCK_MATCHERS}, le="{format_le(threshold)}"}}'
        total = f"{names.TICKET_FIRST_RESPONSE}_count{{{CLOCK_MATCHERS}}}"
        by = "channel, priority, clock"
        return (f"sum by ({by}) (increase({good}[$__range])) "
                f"/ sum by ({by}) (increase({total}[$__range]))")

    def range_quantile(histogram: str, quantile: str, name: str) -> Query:
        expr = (f"histogram_quantile({quantile}, sum by (channel, priority, clock, le) "
                f"(increase({histogram}[$__range])))")
        return Query(expr, f"{name} {{{{channel}}}} / {{{{priority}}}} / {{{{clock}}}}")

    def first_response(quantile: str, name: str) -> Query:
        expr = f"histogram_quantile({quantile}, sum by (channel, le) (rate({buckets}[$__rate_interval])))"
        return Query(expr, f"{name} {{{{channel}}}}")

    panels = []
    kpi_values: dict[str, object] = {}
    kpi_steps = _steps("green")
    if kpi:
        threshold, objective = kpi
        kpi_values = {"threshold": format_duration(threshold), "le": format_le(threshold),
                      "objective": _percent(objective)}
        kpi_steps = _steps("red", (objective / 100, "green"))
        panels.append(_stat(context, "support.within", [Query(within("", "$__range"))],
                            unit="percentunit", width=6, decimals=1, values=kpi_values, thresholds=kpi_steps))
    panels += [
        _stat(context, "support.created", [Query(f"sum(increase({created}[$__range]))")],
              unit="short", width=6, decimals=0, color_mode="none"),
        _stat(context, "support.open", [Query(f"sum({open_tickets})")],
              unit="short", width=6, decimals=0, color_mode="none"),
    ]
    age_threshold = kpi[0] if kpi else DEFAULT_FIRST_RESPONSE_THRESHOLD
    age_values = {"threshold": format_duration(age_threshold), "warning": format_duration(age_threshold / 2)}
    panels.append(_stat(context, "support.oldest", [Query(f"max({oldest})")], unit="s", width=6,
                        values=age_values,
                        thresholds=_steps("green", (age_threshold / 2, "orange"), (age_threshold, "red"))))
    if kpi:
        panels.append(_bar_gauge(context, "support.within_by",
                                 [Query(within("channel, priority", "$__range"), "{{channel}} / {{priority}}")],
                                 unit="percentunit", width=12, min_value=0, max_value=1,
                                 values=kpi_values, thresholds=kpi_steps))
    panels.append(_timeseries(context, "support.first_response",
                              [first_response("0.5", "p50"), first_response("0.9", "p90")], unit="s", width=12))
    if kpi:
        panels.append(_timeseries(context, "support.within_trend",
                                  [Query(within("channel", "$__rate_interval"), "{{channel}}")],
                                  unit="percentunit", width=12, max_value=1, values=kpi_values,
                                  thresholds=_steps("red", (kpi[1] / 100, "transparent")), threshold_line=True))
    if kpi:
        panels.append(_bar_gauge(context, "support.within_clock",
                                 [Query(within_clock(), "{{channel}} / {{priority}} / {{clock}}")],
                                 unit="percentunit", width=12, min_value=0, max_value=1,
                                 values=kpi_values, thresholds=kpi_steps))
    panels += [
        _bar_gauge(context, "support.first_response_clock",
                   [range_quantile(clock_buckets, "0.5", "p50"), range_quantile(clock_buckets, "0.9", "p90")],
                   unit="s", width=12, min_value=0),
        _bar_gauge(context, "support.resolution",
                   [range_quantile(resolution_buckets, "0.5", "p50"),
                    range_quantile(resolution_buckets, "0.9", "p90")],
                   unit="s", width=12, min_value=0),
        _stat(context, "support.unanswered", [Query(f"sum({unanswered})")],
              unit="short", width=6, decimals=0, color_mode="none"),
        _stat(context, "support.automation",
              # "or 0 * ..." gives 0% for a channel whose first responses all came from people.
              [Query(f'(sum by (channel) (increase({names.TICKET_FIRST_RESPONSES_TOTAL}'
                     f'{{{TICKET_MATCHERS}, responder="automation"}}[$__range])) '
                     f"or 0 * sum by (channel) (increase({first_responses}[$__range]))) "
                     f"/ sum by (channel) (increase({first_responses}[$__range]))", "{{channel}}")],
              unit="percentunit", width=6, decimals=1, color_mode="none"),
        _timeseries(context, "support.backlog_trend",
                    [Query(f"sum by (channel) ({open_tickets})", "{{channel}}"),
                     Query(f"sum by (channel) ({unanswered})", "{{channel}} unanswered")],
                    unit="short", width=12, min_value=0),
    ]
    panels += [
        _timeseries(context, "support.open_trend", [Query(f"sum by (channel) ({open_tickets})", "{{channel}}")],
                    unit="short", width=12, min_value=0),
        _timeseries(context, "support.oldest_trend", [Query(f"max by (channel) ({oldest})", "{{channel}}")],
                    unit="s", width=12, min_value=0, values=age_values,
                    thresholds=_steps("transparent", (age_threshold, "red")), threshold_line=True),
        _timeseries(context, "support.created_rate",
                    [Query(f"sum by (channel) (rate({created}[$__rate_interval])) * 3600", "{{channel}}")],
                    unit="short", width=12, min_value=0),
    ]

    variables = [
        _datasource_variable(context),
        _query_variable(context, "channel", f"label_values({names.TICKETS_OPEN}, channel)"),
        _query_variable(context, "priority", f'label_values({names.TICKETS_OPEN}{{channel=~"$channel"}}, priority)'),
        _query_variable(context, "clock", f"label_values({names.TICKET_FIRST_RESPONSE}_count, clock)",
                        single="business"),
    ]
    return _dashboard(context, SUPPORT_UID, "support", variables, panels, time_from="now-7d")


# --- grafanalib output to current Grafana JSON -------------------------------------

# Keys that grafanalib 0.7.1 writes and that the dashboard schema of Grafana 12
# does not define: Grafana 5-7 layout and style keys, and the dashboard id, which
# Grafana assigns on import.
_LEGACY_DASHBOARD_KEYS = ("__inputs", "gnetId", "hideControls", "id", "rows", "sharedCrosshair", "style")
_LEGACY_PANEL_KEYS = ("color", "columns", "editable", "error", "fontSize", "height", "mappings", "minSpan", "span")
# Graphite and pre-Grafana-8 Prometheus query keys.
_LEGACY_TARGET_KEYS = ("intervalFactor", "metric", "query", "step", "target")
# Keys of the tag support removed in Grafana 8, and interval-variable keys.
_LEGACY_VARIABLE_KEYS = ("auto", "auto_count", "auto_min", "tagValuesQuery", "tagsQuery", "useTags")
# grafanalib's BarGauge writes the Grafana 6 `fieldOptions` and gauge-only keys.
_LEGACY_OPTION_KEYS = {"bargauge": ("fieldOptions", "showThresholdLabels", "showThresholdMarkers")}


def _without_none(data: dict) -> dict:
    return {key: value for key, value in data.items() if value is not None}


def _modernize_dashboard(dashboard: Dashboard) -> dict:
    """Return the JSON of a grafanalib dashboard in the form current Grafana writes."""
    data = json.loads(json.dumps(dashboard.to_json_data(), cls=DashboardEncoder))
    for key in _LEGACY_DASHBOARD_KEYS:
        data.pop(key, None)
    data["timepicker"].pop("time_options", None)
    data["timepicker"] = _without_none(data["timepicker"])
    data["templating"]["list"] = [_modernize_variable(variable) for variable in data["templating"]["list"]]
    data["panels"] = [_modernize_panel(panel) for panel in data["panels"]]
    return _without_none(data)


def _modernize_variable(variable: dict) -> dict:
    for key in _LEGACY_VARIABLE_KEYS:
        variable.pop(key, None)
    variable = _without_none(variable)
    current = variable.pop("current", {})
    if current.get("value") == "$__all":
        variable["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    elif current.get("value") and variable.get("type") == "query":
        variable["current"] = {"selected": True, "text": current["value"], "value": current["value"]}
    if variable["type"] == "query":
        variable["definition"] = variable["query"]
    return variable


def _modernize_panel(panel: dict) -> dict:
    for key in _LEGACY_PANEL_KEYS:
        panel.pop(key, None)
    panel = _without_none(panel)
    for key in _LEGACY_OPTION_KEYS.get(panel["type"], ()):
        panel["options"].pop(key, None)

    defaults = panel["fieldConfig"]["defaults"]
    if "custom" in defaults:
        defaults["custom"] = _without_none(defaults["custom"])
        # Grafana 10 replaced the table's displayMode with cellOptions.
        if panel["type"] == "table":
            defaults["custom"].pop("displayMode", None)
    panel["fieldConfig"]["defaults"] = _without_none(defaults)

    if panel.get("repeat"):
        panel["repeatDirection"] = panel["repeatDirection"] or "h"
    else:
        for key in ("repeat", "repeatDirection", "maxPerRow"):
            panel.pop(key, None)

    panel["targets"] = [_modernize_target(target) for target in panel["targets"]]
    return panel


def _modernize_target(target: dict) -> dict:
    for key in _LEGACY_TARGET_KEYS:
        target.pop(key, None)
    if not target.get("interval"):
        target.pop("interval", None)
    target["editorMode"] = "code"
    target["range"] = not target["instant"]
    return _without_none(target)
