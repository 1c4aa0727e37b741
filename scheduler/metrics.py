"""Prometheus metrics of this process, served by the API at `GET /metrics`.

Labels are bounded: a route's template (`/schedules/{campaign_id}`), never its raw path, and no
workflow, customer or campaign ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, disable_created_metrics

disable_created_metrics()  # no `_created` twin of every series: the start time says nothing a scraper needs

HTTP_REQUESTS = Counter(
    "scheduler_http_requests",
    "API requests answered, by method, route template (`unmatched`: no route) and status code.",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "scheduler_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by method and route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
FLOW_SIGNALS = Counter(
    "scheduler_flow_signals",
    "Signals delivered to running flows (replies, conversions, /send-signal), by signal name.",
    ["signal"],
)
UNMATCHED = Counter(
    "scheduler_webhook_unmatched",
    "Replies and conversions that matched no running flow, by endpoint (Twilio's are answered 200 all the same).",
    ["endpoint"],
)
MESSAGES = Counter(
    "scheduler_messages",
    "Customer messages (send_message) by channel and what became of them: sent, suppressed, stopped, held (quiet"
    " hours or a cap's delay; counted when the hold begins, and again as sent), skipped_quiet_hours,"
    " skipped_frequency_cap.",
    ["channel", "result"],
)
DELIVERIES = Counter(
    "scheduler_deliveries",
    "Customer messages' delivery statuses recorded, by channel and status: sent (the gateway took it, counted by the"
    " worker), then queued, delivered, undelivered, failed as receipts move a message forward (a repeat or an"
    " out-of-order receipt is not counted; a final refusal by the gateway counts as failed).",
    ["channel", "status"],
)
