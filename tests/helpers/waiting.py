"""Waiting for what the servers and processes under test do a moment later."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], *, timeout: float = 15.0, interval: float = 0.1) -> T:
    """Retry `check` until it stops raising AssertionError (visibility and processes take a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)
