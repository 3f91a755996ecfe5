"""Metric and recording-rule names shared by the exporter and the generators.

The exporter publishes these series and the rule and dashboard generators
query them, so both import the names from here.
"""

# Scheduled probes, labelled service, module, location.
PROBES_TOTAL = "slawatch_probes_total"
PROBE_FAILURES_TOTAL = "slawatch_probe_failures_total"
PROBE_DURATION = "slawatch_probe_duration_seconds"
PROBE_SUCCESS = "slawatch_probe_success"
PROBE_LAST_RUN = "slawatch_probe_last_run_timestamp_seconds"
PROBE_HTTP_PHASE = "slawatch_probe_http_phase_seconds"
PROBE_SSL_EXPIRY = "slawatch_probe_ssl_earliest_cert_expiry"
PROBE_SKIPPED_TOTAL = "slawatch_probe_skipped_total"
# Also labelled reason; summing over reason gives PROBE_FAILURES_TOTAL.
PROBE_FAILURE_REASONS_TOTAL = "slawatch_probe_failure_reasons_total"
# HTTP responses of scheduled probes, with the status code in the label code.
PROBE_HTTP_RESPONSES_TOTAL = "slawatch_probe_http_responses_total"
# Response body size divided by the transfer phase, in bytes per second.
PROBE_TRANSFER_SPEED = "slawatch_probe_transfer_bytes_per_second"

# Support tickets, labelled source, channel, priority and team; the histograms and
# the oldest-unanswered age also carry clock ("calendar" or "business").
TICKETS_CREATED_TOTAL = "slawatch_tickets_created_total"
TICKET_FIRST_RESPONSE = "slawatch_ticket_first_response_seconds"
TICKET_RESOLUTION = "slawatch_ticket_full_resolution_seconds"
TICKETS_OPEN = "slawatch_tickets_open"
TICKET_OLDEST_UNANSWERED = "slawatch_ticket_oldest_unanswered_age_seconds"
TICKET_EVENTS_TOTAL = "slawatch_ticket_events_total"
# First responses, with responder="human" or "automation".
TICKET_FIRST_RESPONSES_TOTAL = "slawatch_ticket_first_responses_total"
# Open tickets that have no first response yet.
TICKETS_UNANSWERED = "slawatch_tickets_unanswered"

# Exporter health.
CONFIG_LAST_RELOAD_SUCCESS = "slawatch_config_last_reload_successful"
CONFIG_LAST_RELOAD_TIME = "slawatch_config_last_reload_success_timestamp_seconds"
BUILD_INFO = "slawatch_build_info"

# Recording rules, named level:metric:operations. Each carries the labels
# slo, service and team.
SLI_ERROR_RATIO = "slo:sli_error:ratio_rate{window}"
SLO_OBJECTIVE = "slo:objective:ratio"
SLO_ERROR_BUDGET = "slo:error_budget:ratio"
SLO_BUDGET_REMAINING = "slo:error_budget_remaining:ratio"
SLO_BURN_RATE = "slo:burn_rate:ratio_rate{window}"
