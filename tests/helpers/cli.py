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


def write_config(path: Path, *, address: str, task_queue: str, dev_port: int | None = None) -> Path:
    dev = f"port = {dev_port}\n" if dev_port else ""
    path.write_text(
        f"""\
[temporal]
address = "{address}"
task_queue = "{task_queue}"

[dev_server]
{dev}db_file = "{path.parent / "temporal.db"}"

[campaigns]
dir = "{ROOT / "campaigns"}"

[channels]
outbox = "{path.parent / "outbox.jsonl"}"
""",
        encoding="utf-8",
    )
    return path


def assert_one_line_error(run: Run, *fragments: str) -> None:
    assert run.code == 1, run
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
