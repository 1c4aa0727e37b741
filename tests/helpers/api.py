"""The HTTP API in tests: `create_app()` against a real Temporal, with a worker on the settings' task queue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from temporalio.client import Client

from scheduler.api import create_app
from scheduler.config import Settings
from scheduler.flow.models import FlowStatus
from scheduler.worker import make_worker


@dataclass
class Api:
    http: httpx.AsyncClient
    client: Client
    settings: Settings

    async def start(self, **body: Any) -> httpx.Response:
        return await self.http.post("/start-workflow", json=body)

    async def signal(self, workflow_id: str, **extra: Any) -> httpx.Response:
        body = {"workflow_id": workflow_id, "signal_name": "client-answered", **extra}
        return await self.http.post("/send-signal", json=body)

    async def result(self, workflow_id: str) -> FlowStatus:
        return await self.client.get_workflow_handle(workflow_id, result_type=FlowStatus).result()


@asynccontextmanager
async def running_api(client: Client, settings: Settings, task_queue: str) -> AsyncIterator[Api]:
    """The app (client given, so no lifespan is needed) and a worker polling `task_queue`."""
    settings.temporal.task_queue = task_queue
    app = create_app(settings, client=client)
    async with (
        make_worker(client, settings),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
    ):
        yield Api(http, client, settings)
