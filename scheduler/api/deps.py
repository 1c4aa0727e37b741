"""FastAPI dependencies, as `Annotated` aliases so tests can override them.

Async on purpose: FastAPI runs plain functions in its thread pool, two round trips per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from temporalio.client import Client

from scheduler.config import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_client(request: Request) -> Client:
    return request.app.state.client  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClientDep = Annotated[Client, Depends(get_client)]
