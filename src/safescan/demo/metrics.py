"""What the demo reads from the institution's ``/metrics`` (Prometheus text, parsed with
prometheus-client's parser): the payments it counted."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from safescan.demo.stack import DemoError
from safescan.web import pki

PAYMENTS = "safescan_payments_total"


def payments_total(base_url: str, *, timeout: float = 10.0) -> int:
    """``safescan_payments_total`` of the institution at ``base_url`` (the demo runs it on
    127.0.0.1, which may read its metrics; HTTPS verified with the CA pinned for it, a recorded
    hop like every other); a :class:`DemoError` when it cannot be read."""
    url = base_url + "/metrics"
    try:
        r = httpx.get(url, timeout=timeout, verify=pki.verify_for(url))  # the pinned CA
        pki.record_hop(url)
    except httpx.HTTPError as exc:
        raise DemoError(f"the institution's /metrics did not answer: {exc}") from None
    if r.status_code != 200:
        raise DemoError(f"the institution's /metrics answered {r.status_code}")
    try:
        for family in text_string_to_metric_families(r.text):
            for sample in family.samples:
                if sample.name == PAYMENTS and not sample.labels:
                    return int(sample.value)
    except ValueError as exc:
        raise DemoError(f"the institution's /metrics is not Prometheus text: {exc}") from None
    raise DemoError(f"the institution's /metrics has no {PAYMENTS}")
