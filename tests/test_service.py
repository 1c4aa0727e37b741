"""`scheduler up` / `api` start-up off loopback: refused without an API key or with unsigned webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from scheduler.devserver import port_in_use
from scheduler.store import Store
from scheduler.store.api_keys import Keys
from tests.helpers.cli import SCHEDULER, Run, scheduler
from tests.helpers.servers import free_ports
from tests.helpers.signing import WEBHOOK_SECRET


def write_config(tmp_path: Path, *, temporal: str = "", webhooks: str = "") -> tuple[Path, int, int]:
    """A config on free ports with its own store; `temporal`: an address (empty: the embedded dev server)."""
    dev_port, api_port = free_ports(2)
    config = tmp_path / "scheduler.toml"
    config.write_text(
        f'[temporal]\naddress = "{temporal}"\n'
        f'[dev_server]\nport = {dev_port}\ndb_file = "{tmp_path / "temporal.db"}"\n'
        f'[store]\nurl = "sqlite:///{tmp_path / "scheduler.db"}"\n'
        f"[api]\nport = {api_port}\n"
        f"[webhooks]\n{webhooks}\n",
        encoding="utf-8",
    )
    return config, dev_port, api_port


def assert_refused(run: Run, *fragments: str) -> None:
    """Exit 1 with one error line, the last (log lines of the start before it: the store's migration)."""
    assert run.code == 1, run
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [run.stderr.strip().splitlines()[-1]], run.stderr
    for fragment in fragments:
        assert fragment in errors[0]


def create_key(tmp_path: Path, name: str = "ops", scope: str = "write") -> str:
    store = Store.open(f"sqlite:///{tmp_path / 'scheduler.db'}")
    try:
        return Keys(store).create(name, scope=scope)[1]  # type: ignore[arg-type]
    finally:
        store.close()


@pytest.mark.parametrize("verb", ["up", "api"])
async def test_serve_off_loopback_without_a_key_exits_1_naming_keys_create(tmp_path: Path, verb: str) -> None:
    config, dev_port, api_port = write_config(tmp_path)
    run = await scheduler(verb, "--config", config, cwd=tmp_path, env={"SCHEDULER_API__HOST": "0.0.0.0"})
    assert_refused(
        run,
        "api.host is '0.0.0.0', not a loopback address",
        "no API key exists: create one with `scheduler keys create NAME --scope write`",
        "webhooks.secret is empty",  # both problems at once: one round trip to fix them
        "webhooks.allow_unsigned = true",
    )
    assert "starting the Temporal dev server" not in run.stdout + run.stderr
    assert not port_in_use("127.0.0.1", dev_port) and not port_in_use("127.0.0.1", api_port)


async def test_serve_off_loopback_with_a_key_but_unsigned_webhooks_exits_1_naming_the_keys(tmp_path: Path) -> None:
    config, _, _ = write_config(tmp_path)
    create_key(tmp_path)
    run = await scheduler("api", "--config", config, cwd=tmp_path, env={"SCHEDULER_API__HOST": "0.0.0.0"})
    assert_refused(run, "webhooks.secret is empty", "SCHEDULER_WEBHOOKS__SECRET", "webhooks.allow_unsigned")
    assert "scheduler keys create" not in run.stderr


@pytest.mark.parametrize(
    ("host", "webhooks", "keyed"),
    [("127.0.0.1", "", False), ("0.0.0.0", f'secret = "{WEBHOOK_SECRET}"', True)],
    ids=["loopback-no-key", "all-interfaces-key-and-secret"],
)
async def test_serve_passes_the_check_when_safe(tmp_path: Path, host: str, webhooks: str, keyed: bool) -> None:
    """Nothing listens on the Temporal port: past the check, the service stops at the connection."""
    (temporal_port,) = free_ports(1)
    config, _, _ = write_config(tmp_path, temporal=f"127.0.0.1:{temporal_port}", webhooks=webhooks)
    if keyed:
        create_key(tmp_path)
    run = await scheduler("api", "--config", config, cwd=tmp_path, env={"SCHEDULER_API__HOST": host})
    assert run.code == 1
    assert "cannot reach Temporal" in run.stderr, run.stderr


async def test_api_off_loopback_with_a_key_serves_and_needs_the_key(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """`webhooks.allow_unsigned = true` on purpose: it starts, and says so."""
    address = dev_env.client.service_client.config.target_host
    config, _, api_port = write_config(tmp_path, temporal=address, webhooks="allow_unsigned = true")
    key = create_key(tmp_path, "dash", "read")
    log = tmp_path / "api.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            SCHEDULER,
            "api",
            "--config",
            str(config),
            cwd=tmp_path,
            env={**environ, "SCHEDULER_API__HOST": "0.0.0.0"},
            stdout=out,
            stderr=out,
            stdin=asyncio.subprocess.DEVNULL,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=5) as http:
            deadline = time.monotonic() + 30
            while True:
                assert proc.returncode is None, log.read_text()
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/healthz")).status_code == 200:
                        break
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.2)
            refused = await http.get("/schedules")
            assert (refused.status_code, refused.headers["www-authenticate"]) == (401, "Bearer")
            assert (await http.get("/schedules", headers={"Authorization": f"Bearer {key}"})).status_code == 200
            assert (
                await http.post("/schedules/x/pause", json={}, headers={"Authorization": f"Bearer {key}"})
            ).status_code == 403
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), timeout=20)
    warnings = [line for line in log.read_text().splitlines() if "WARNING" in line]
    assert any("webhooks.allow_unsigned is true" in line for line in warnings), warnings
