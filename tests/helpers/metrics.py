"""The API's Prometheus metrics, read back one sample at a time."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


async def metric(http: httpx.AsyncClient, sample: str, **labels: str) -> float:
    """One sample of the API's `GET /metrics` (0 when the series does not exist yet)."""
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    for family in text_string_to_metric_families(response.text):
        for found in family.samples:
            if found.name == sample and found.labels == labels:
                return found.value
    return 0.0
