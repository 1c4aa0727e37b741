"""Outbound HTTP clients (gateway, webhook node, HTTP audiences), all on one TLS context per process.

Why: a fresh `httpx.AsyncClient` builds its own TLS context, loading the whole CA bundle: about 20 ms of
CPU, paid per message by a client per message. Sharing the context brings a client down to a fraction of
a millisecond, and a client per call keeps nothing open between the sends of a flow.
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default: certificates and host names verified against certifi's bundle.

    `SSL_CERT_FILE` / `SSL_CERT_DIR` replace the bundle when set; they are read here, once.
    """
    return httpx.create_ssl_context()


def http_client(**options: Any) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` with `options`, verifying TLS through the shared context."""
    return httpx.AsyncClient(verify=tls_context(), **options)


RETRYABLE_4XX = frozenset({408, 425, 429})
"""4xx answers that mean "later", not "never"."""


def retryable_status(status: int) -> bool:
    """An HTTP answer another attempt may turn into a success: a 5xx or one of `RETRYABLE_4XX`."""
    return status >= 500 or status in RETRYABLE_4XX
