"""Liveness, including whether Temporal answers."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from scheduler.api.deps import ClientDep, SettingsDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(client: ClientDep, settings: SettingsDep) -> JSONResponse:
    try:
        await asyncio.wait_for(client.service_client.check_health(), timeout=3)
        temporal = "ok"
    except Exception as exc:
        temporal = f"unreachable: {exc}"
    status = 200 if temporal == "ok" else 503
    return JSONResponse(
        {"status": "ok" if status == 200 else "degraded", "temporal": temporal, "address": settings.temporal_address},
        status_code=status,
    )
