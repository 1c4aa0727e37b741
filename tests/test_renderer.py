"""Rendering in child processes: a template that escapes the sandbox's limits is stopped at its CPU, wall
and memory limits and fails its step; the worker's event loop, its other flows and later renders carry on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from scheduler.config import Settings
from scheduler.delivery.channels import Outbox
from scheduler.delivery.renderer import Renderer
from scheduler.delivery.templates import TemplateRenderError
from scheduler.flow.models import FlowInput, FlowStatus
from scheduler.worker import make_worker
from tests.helpers.flows import CUSTOMER, failure_of, one_step, start_flow_input
from tests.helpers.waiting import eventually

CONTEXT: dict[str, Any] = {"customer": {"name": "Ann"}, "cart": {}, "campaign": {}, "step": {}}
CPU_BOMB = "{% for i in range(20000) %}{% if ('x' * 99999).split('x') | length < 0 %}{% endif %}{% endfor %}"
"""Within every sandbox limit (20,000 iterations and calls each, values of 100,000 items), yet a minute of CPU."""
MEMORY_BOMB = "{{ ('a' * 100000).translate({97: 'b' * 100000}) | length }}"
"""One C call making 10,000,000,000 characters: the sandbox sees its size only once it returns."""


def renderer_pids() -> set[int]:
    """Live renderer children of this process (a zombie has no command line)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):  # it ended while we looked
            continue
        if parent == os.getpid() and b"scheduler.delivery.renderer" in command:
            found.add(int(stat.parent.name))
    return found


async def ended(pid: int) -> None:
    """Wait until the renderer child `pid` is gone (killed, it is reaped a moment later)."""

    async def gone() -> None:
        assert pid not in renderer_pids()

    await eventually(gone)


@contextlib.asynccontextmanager
async def event_loop_lags() -> AsyncIterator[list[float]]:
    """How late a heartbeat's 50 ms sleeps woke up, while the block runs: the event loop's responsiveness."""
    lags: list[float] = []

    async def beat() -> None:
        while True:
            started = time.monotonic()
            await asyncio.sleep(0.05)
            lags.append(time.monotonic() - started - 0.05)

    task = asyncio.create_task(beat())
    try:
        yield lags
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_renderer_renders_in_a_child_and_passes_errors_on() -> None:
    before = renderer_pids()
    renderer = Renderer()
    async with renderer.running():
        assert await renderer.render("Hi {{ customer.name }}", CONTEXT, max_length=100) == "Hi Ann"
        with pytest.raises(TemplateRenderError) as caught:
            await renderer.render("{{ 'x' * 101 }}", CONTEXT, max_length=100)
        assert str(caught.value) == "template failed to render: the text is longer than 100 characters"
        with pytest.raises(TemplateRenderError) as caught:  # a KeyError in the child
            await renderer.render("{{ '{missing}'.format() }}", CONTEXT, max_length=100)
        assert str(caught.value) == "template failed to render (template line 1): 'missing'"
        assert await renderer.render("Bye", CONTEXT, max_length=100) == "Bye"
        assert len(renderer_pids() - before) == 1  # one child served them all
    assert renderer_pids() == before  # and ended with the renderer


async def test_renderer_stops_a_render_at_its_cpu_deadline_and_carries_on() -> None:
    before = renderer_pids()
    renderer = Renderer(cpu_seconds=0.5)
    async with renderer.running(), event_loop_lags() as lags:
        await renderer.render("warm", CONTEXT, max_length=10)
        [pid] = renderer_pids() - before
        started = time.monotonic()
        with pytest.raises(TemplateRenderError) as caught:
            await renderer.render(CPU_BOMB, CONTEXT, max_length=10)
        assert time.monotonic() - started < 10
        assert str(caught.value) == "template took more than 0.5 s of CPU time to render"
        assert pid not in renderer_pids()  # gone, so it spends no more CPU
        assert await renderer.render("Hi {{ customer.name }}", CONTEXT, max_length=10) == "Hi Ann"
    assert max(lags) < 2, lags


async def test_renderer_kills_a_child_past_the_wall_deadline() -> None:
    before = renderer_pids()
    renderer = Renderer(wall_seconds=1)
    async with renderer.running():
        await renderer.render("warm", CONTEXT, max_length=10)
        [pid] = renderer_pids() - before
        os.kill(pid, signal.SIGSTOP)  # a child that gets no CPU, so its CPU deadline never comes
        with pytest.raises(TemplateRenderError) as caught:
            await renderer.render("Hi", CONTEXT, max_length=10)
        assert str(caught.value) == "template took longer than 1 s to render"

        await ended(pid)
        assert await renderer.render("Hi", CONTEXT, max_length=10) == "Hi"


async def test_renderer_children_have_a_memory_limit() -> None:
    renderer = Renderer()
    async with renderer.running():
        started = time.monotonic()
        with pytest.raises(TemplateRenderError) as caught:
            await renderer.render(MEMORY_BOMB, CONTEXT, max_length=10)
        assert time.monotonic() - started < 10
        assert str(caught.value) in (
            "template failed to render (template line 1): it needs too much memory",
            "template took more than 2 s of CPU time to render",  # a slow machine: filling 512 MB takes long
        )


async def test_renderer_kills_the_child_of_a_cancelled_render() -> None:
    """A cancelled activity (its flow ended, the worker stops) leaves nothing rendering for nobody."""
    before = renderer_pids()
    renderer = Renderer(cpu_seconds=60)
    async with renderer.running():
        await renderer.render("warm", CONTEXT, max_length=10)
        [pid] = renderer_pids() - before
        task = asyncio.create_task(renderer.render(CPU_BOMB, CONTEXT, max_length=10))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        await ended(pid)


async def test_poisonous_templates_fail_their_step_while_other_flows_and_the_event_loop_carry_on(
    dev_env: WorkflowEnvironment, settings: Settings, task_queue: str
) -> None:
    """The issue's nested loops stop at the sandbox's budget, a template within every sandbox limit at the
    CPU deadline; a healthy flow on the same worker is delivered meanwhile, and the loop never stalls.

    On the dev server: the time-skipping one would skip time (past the activity's timeout) while the
    CPU-bound render runs.
    """
    before = renderer_pids()
    templates = {
        "budget": "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        "cpu": CPU_BOMB,
        "healthy": "Hi {{ customer.name }}",
    }

    async def result(template: str) -> FlowStatus | WorkflowFailureError:
        flow = FlowInput(definition=one_step(template=template), customer=CUSTOMER)
        handle = await start_flow_input(dev_env.client, flow, task_queue)
        try:
            return await asyncio.wait_for(handle.result(), timeout=60)
        except WorkflowFailureError as exc:
            return exc

    async with event_loop_lags() as lags:
        async with make_worker(dev_env.client, settings, task_queue=task_queue):
            budget, cpu, healthy = await asyncio.gather(*map(result, templates.values()))
        assert renderer_pids() == before  # the worker's children ended with it
    assert isinstance(healthy, FlowStatus), healthy
    assert [line["text"] for line in Outbox(settings.channels.outbox).read()] == ["Hi Ada"]
    for failed, message in (
        (budget, "template failed to render (template line 1): more than 50,000 loop iterations and calls"),
        (cpu, "template took more than 2 s of CPU time to render"),
    ):
        error = failure_of(failed)
        assert (error.type, error.non_retryable) == ("TemplateError", True)
        assert error.message == f"step 'step_1' (template, channel 'console'): {message}"
    assert max(lags) < 2, lags
