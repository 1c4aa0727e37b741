"""The `scheduler` console script run as a user runs it: a subprocess, its output, a config file for it."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import BIN, ROOT

SCHEDULER = BIN / "scheduler"
"""The console script (the venv is not activated, so not on PATH)."""


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


async def scheduler(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> Run:
    """Run the console script with a clean SCHEDULER_* environment; kill it if it hangs."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
    proc = await asyncio.create_subprocess_exec(
        SCHEDULER,
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        cwd=cwd or ROOT,
        env={**environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())
