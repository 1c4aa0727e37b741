"""FastAPI dependencies, as `Annotated` aliases so tests can override them.

Async on purpose: FastAPI runs plain functions in its thread pool, two round trips per request.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Request
from temporalio.client import Client

from scheduler.campaigns.schedules import ScheduleWriter
from scheduler.config import Settings
from scheduler.store import Store
from scheduler.store.api_keys import KeyCache, Keys
from scheduler.store.consent import Consent
from scheduler.store.conversions import Conversions
from scheduler.store.deliveries import Deliveries


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_client(request: Request) -> Client:
    return request.app.state.client  # type: ignore[no-any-return]


async def get_schedules(request: Request) -> ScheduleWriter:
    """The reconcile loop's writer when this process runs it (so a pause never overlaps its updates), else one
    of this app's own."""
    state = request.app.state
    if state.reconciler is not None:
        return state.reconciler.schedules  # type: ignore[no-any-return]
    if state.schedules is None:
        state.schedules = ScheduleWriter(state.client, state.settings)
    return state.schedules  # type: ignore[no-any-return]


async def get_store(request: Request) -> Store:
    """The service's database: the one `scheduler up` opened, else the configured one, opened on first use."""
    state = request.app.state
    if state.store is None:
        state.store = await asyncio.to_thread(Store.open, state.settings.store_url)
    return state.store  # type: ignore[no-any-return]


async def get_consent(request: Request) -> Consent:
    """The suppression list, in the store."""
    state = request.app.state
    if state.consent is None:
        state.consent = Consent(await get_store(request))
    return state.consent  # type: ignore[no-any-return]


async def get_conversions(request: Request) -> Conversions:
    """The conversions and their attributions, in the store."""
    return Conversions(await get_store(request))


async def get_deliveries(request: Request) -> Deliveries:
    """The messages sent and their delivery statuses, in the store."""
    return Deliveries(await get_store(request))


async def get_keys(request: Request) -> KeyCache:
    """The API keys, in the store, behind this app's cache."""
    state = request.app.state
    if state.keys is None:
        state.keys = KeyCache(Keys(await get_store(request)), seconds=state.key_cache_seconds)
    return state.keys  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClientDep = Annotated[Client, Depends(get_client)]
SchedulesDep = Annotated[ScheduleWriter, Depends(get_schedules)]
ConsentDep = Annotated[Consent, Depends(get_consent)]
ConversionsDep = Annotated[Conversions, Depends(get_conversions)]
DeliveriesDep = Annotated[Deliveries, Depends(get_deliveries)]
