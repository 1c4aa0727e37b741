"""Renders templates in child processes, so a render that runs away costs one child, never the worker.

`templates` stops the usual bombs in milliseconds with a clear message. What its limits cannot bound
(a single C-level operation on the largest values allowed) holds the GIL: in a thread it could neither
be stopped nor let the event loop run. A child process can be stopped: the kernel ends it after
`CPU_SECONDS` of CPU time in one render (also in the middle of a C call, also when the worker is gone),
it gets `MEMORY_BYTES` of address space, and the worker kills it after `WALL_SECONDS` whatever it
does. A dead child is replaced at the next render. The worker only awaits the answer, so its event
loop (under `scheduler up`, the API's too) runs on meanwhile.

Protocol: the child says `{}` when it is ready, then answers each JSON line on its stdin
(`template`, `context`, `max_length`) with one on its stdout (`text`, or `error`).
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from scheduler.delivery.templates import TemplateLimitError, TemplateRenderError, render

PROCESSES = 2
"""Children per worker: renders take about a millisecond, so two keep up with hundreds of flows a second."""
CPU_SECONDS = 2.0
"""CPU time of one render (templates' own limits stop the usual bombs well before)."""
WALL_SECONDS = 5.0
"""Wall time of one render, should the child not use its CPU (it cannot wait on anything)."""
MEMORY_BYTES = 512 * 1024 * 1024
"""Address space of a child: its interpreter needs about 30 MB, a render's values at most a few."""
START_SECONDS = 30.0
"""For a child to start (an interpreter and Jinja), generous for a busy machine."""
_LINE_LIMIT = 4 * 1024 * 1024
"""Bytes in one answer: an e-mail of 100,000 characters fits, even escaped."""


class Renderer:
    """Up to `processes` children, started when first needed; `render` uses an idle one.

    Wrap the worker's run in `running()` so the children end with it.
    """

    def __init__(
        self,
        *,
        processes: int = PROCESSES,
        cpu_seconds: float = CPU_SECONDS,
        wall_seconds: float = WALL_SECONDS,
        memory_bytes: int = MEMORY_BYTES,
    ) -> None:
        self.cpu_seconds = cpu_seconds
        self.wall_seconds = wall_seconds
        self.memory_bytes = memory_bytes
        self._slots = asyncio.Semaphore(processes)
        self._idle: list[_Child] = []

    async def render(self, template: str, context: dict[str, Any], *, max_length: int) -> str:
        """`templates.render(template, context, max_length=max_length)`, in a child.

        Raises:
            TemplateRenderError: the template failed, went over a limit or ran out of time.
            RuntimeError: no child could start (retrying may help).
        """
        request = json.dumps({"template": template, "context": context, "max_length": max_length}, default=str)
        async with self._slots:
            child = await self._idle_child()
            try:
                answer = await child.ask(request.encode() + b"\n", self)
            except BaseException:  # also a cancelled activity: nothing may go on rendering for nobody
                child.kill()
                raise
            self._idle.append(child)
        if "error" in answer:
            raise TemplateRenderError(answer["error"])
        return str(answer["text"])

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """For as long as renders may come (the worker's run): the children end after it."""
        try:
            yield
        finally:
            idle, self._idle = self._idle, []
            await asyncio.gather(*(child.close() for child in idle))

    async def _idle_child(self) -> _Child:
        while self._idle:
            child = self._idle.pop()
            if child.proc.returncode is None:
                return child
        return await _Child.start(self)


class _Child:
    """One child process and its pipes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, renderer: Renderer) -> _Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            str(renderer.cpu_seconds),
            str(renderer.memory_bytes),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=_LINE_LIMIT,
        )
        child = cls(proc)
        try:
            async with asyncio.timeout(START_SECONDS):
                ready = await child.stdout.readline()
        except BaseException:
            child.kill()
            raise
        if not ready:
            raise RuntimeError(f"the template renderer exited as it started (status {await proc.wait()})")
        return child

    @property
    def stdout(self) -> asyncio.StreamReader:
        assert self.proc.stdout is not None
        return self.proc.stdout

    async def ask(self, request: bytes, renderer: Renderer) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            async with asyncio.timeout(renderer.wall_seconds):
                self.proc.stdin.write(request)
                await self.proc.stdin.drain()
                line = await self.stdout.readline()
        except TimeoutError:
            raise TemplateLimitError(f"template took longer than {renderer.wall_seconds:g} s to render") from None
        except ConnectionResetError:  # BrokenPipeError among them: it died, so says its status
            line = b""
        if not line:
            status = await self.proc.wait()
            if status == -signal.SIGPROF:
                raise TemplateLimitError(f"template took more than {renderer.cpu_seconds:g} s of CPU time to render")
            if status < 0:
                raise TemplateRenderError(f"template renderer was killed by {signal.Signals(-status).name}")
            raise RuntimeError(f"the template renderer exited with status {status}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def kill(self) -> None:
        if self.proc.returncode is None:
            with suppress(ProcessLookupError):
                self.proc.kill()

    async def close(self) -> None:
        """Close its stdin, which ends it; kill it if it does not end."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            async with asyncio.timeout(5):
                await self.proc.wait()
        except TimeoutError:
            self.kill()
            await self.proc.wait()


def _serve(cpu_seconds: float, memory_bytes: int) -> None:
    """The child: render each request within the limits until stdin closes."""
    with suppress(ValueError, OSError):  # not every system enforces an address-space limit (macOS)
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the worker, which then closes our stdin
    out = sys.stdout.buffer
    out.write(b"{}\n")
    out.flush()
    for line in sys.stdin.buffer:
        # SIGPROF's default action ends the process, also in the middle of a C call.
        signal.setitimer(signal.ITIMER_PROF, cpu_seconds)
        try:
            request = json.loads(line)
            answer = {"text": render(request["template"], request["context"], max_length=request["max_length"])}
        except TemplateRenderError as exc:
            answer = {"error": str(exc)}
        except Exception as exc:  # a request the worker should not have sent: say so, and live on
            answer = {"error": f"template renderer: {exc!r}"[:500]}
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
        out.write(json.dumps(answer, ensure_ascii=False).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    _serve(float(sys.argv[1]), int(sys.argv[2]))
