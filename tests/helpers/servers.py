"""Servers the tests start: throwaway Temporal dev servers."""

from __future__ import annotations

from typing import Any

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from scheduler.devserver import temporal_binary
from scheduler.temporal import SEARCH_ATTRIBUTES


async def local_environment(**options: Any) -> WorkflowEnvironment:
    """A throwaway dev server on a free port, set up as `DevServer` sets up ours (tests and benchmarks).

    The SDK starts and stops it; our converter, search attributes and WAL journal are what matter.
    """
    return await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(temporal_binary()),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_extra_args=["--sqlite-pragma", "journal_mode=wal"],
        **options,
    )
