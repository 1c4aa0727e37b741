"""`scheduler up` / `api` start-up: the warning about unauthenticated routes on a non-loopback `api.host`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.cli import scheduler
from tests.helpers.servers import free_ports


@pytest.mark.parametrize(
    ("verb", "host", "warned"),
    [("up", "0.0.0.0", True), ("api", "0.0.0.0", True), ("api", "127.0.0.1", False)],
    ids=["up-all-interfaces", "api-all-interfaces", "api-loopback"],
)
async def test_serve_on_non_loopback_host_warns_routes_are_unauthenticated(
    tmp_path: Path, verb: str, host: str, warned: bool
) -> None:
    temporal_port, api_port = free_ports(2)
    config = tmp_path / "scheduler.toml"
    # Nothing listens on the Temporal port: the service warns at start, then stops at the connection.
    config.write_text(
        f'[temporal]\naddress = "127.0.0.1:{temporal_port}"\n[api]\nport = {api_port}\n', encoding="utf-8"
    )
    run = await scheduler(verb, "--config", config, cwd=tmp_path, env={"SCHEDULER_API__HOST": host})
    assert run.code == 1
    assert "cannot reach Temporal" in run.stderr
    warnings = [line for line in run.stderr.splitlines() if "WARNING" in line and "unauthenticated" in line]
    assert bool(warnings) is warned, run.stderr
    if warned:
        assert f"api.host is '{host}', not a loopback address" in warnings[0]
        assert "/start-workflow" in warnings[0]
        assert "/send-signal" in warnings[0]
        assert "forge customer replies and opt-outs" in warnings[0]
