"""Per-contact reader/writer locks shared by every process on one store, so an opt-out is ordered against
the sends racing it.

A send holds its contact's lock *shared* from the suppression check until the message has been handed to
the channel; an opt-out, once written, takes the lock *exclusively* for a moment (`fence`) before it is
answered. So every send either sees the opt-out, or had already been handed over before the opt-out's
answer: after a 2xx, no delivery to that contact starts.

SQLite (one machine): open-file-description byte-range locks (`F_OFD_SETLK`) on a file beside the
database, one byte per contact hash; they exclude across processes and between two opens in one process.
PostgreSQL (a cluster): advisory locks keyed by the same hash; each process keeps one session that holds
its sends' shared locks, so a send costs two short round trips, not a connection.

`exclusive(key)` is the same lock taken exclusively and held for a moment around a short read-then-write
(the send ledger's count and insert, on `"cap:" + contact`): it excludes every other hold of `key`, shared
or exclusive, in this process and in the others.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import functools
import hashlib
import logging
import os
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from scheduler.errors import StoreUnavailable

log = logging.getLogger(__name__)

SEND_WAIT = 30.0
"""Seconds a send waits for an opt-out's fence to pass (it is held for an instant) before it fails and retries."""
FENCE_WAIT = 60.0
"""Seconds an opt-out waits for the sends in flight to its contact (each bounded by its channel's timeout)."""
EXCLUSIVE_WAIT = 30.0
"""Seconds an exclusive hold waits for the others on its key (each held for a moment) before it fails and retries."""


class ContactLocks(Protocol):
    def shared(self, contact: str) -> Any:
        """An async context manager held while a message to `contact` is checked and handed over."""
        ...

    def exclusive(self, key: str) -> Any:
        """An async context manager holding `key` alone, across processes: keep it to a short read-then-write."""
        ...

    def fence(self, contact: str) -> bool:
        """Wait until no send holds `contact` (blocking: run it in a thread); False if that took too long."""
        ...

    def close(self) -> None: ...


def lock_key(key: str) -> int:
    """A signed 64-bit hash of a lock's key, e.g. a normalized contact (PostgreSQL's advisory-lock key)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


class FileLocks:
    """Byte-range locks on `path`, one fresh open per hold (OFD locks belong to the open, not the process)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def shared(self, contact: str) -> AbstractAsyncContextManager[None]:
        return self._holding(contact, fcntl.F_RDLCK, SEND_WAIT, "an opt-out held it")

    def exclusive(self, key: str) -> AbstractAsyncContextManager[None]:
        return self._holding(key, fcntl.F_WRLCK, EXCLUSIVE_WAIT, "another held it")

    @asynccontextmanager
    async def _holding(self, key: str, kind: int, wait: float, why: str) -> AsyncIterator[None]:
        fd = self._open()
        try:
            if not await _poll_async(lambda: _try_lock(fd, kind, key), wait):
                raise StoreUnavailable(f"lock {self.path}: {why} for over {wait:.0f} s")
            yield
        finally:
            os.close(fd)  # releases the lock

    def fence(self, contact: str) -> bool:
        fd = self._open()
        try:
            return _poll(lambda: _try_lock(fd, fcntl.F_WRLCK, contact), FENCE_WAIT)
        finally:
            os.close(fd)

    def close(self) -> None:
        pass

    def _open(self) -> int:
        return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


_FLOCK = "hhqqixxxx"
"""struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks), padding."""


def _try_lock(fd: int, kind: int, key: str) -> bool:
    offset = lock_key(key) & (2**62 - 1)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack(_FLOCK, kind, os.SEEK_SET, offset, 1, 0))
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


class AdvisoryLocks:
    """PostgreSQL advisory locks: shared and exclusive holds on this process's lock session, the fence in a
    transaction of its own."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._mutex = threading.Lock()
        self._session: Connection | None = None
        self._held: dict[int, int] = {}
        """This process's holds by key: how many shared ones, or -1 for an exclusive one. One session's advisory
        locks never conflict with each other, so the process keeps its own holders apart itself."""

    def shared(self, contact: str) -> AbstractAsyncContextManager[None]:
        return self._holding(contact, exclusive=False, wait=SEND_WAIT, why="an opt-out held it")

    def exclusive(self, key: str) -> AbstractAsyncContextManager[None]:
        return self._holding(key, exclusive=True, wait=EXCLUSIVE_WAIT, why="another held it")

    @asynccontextmanager
    async def _holding(self, key: str, *, exclusive: bool, wait: float, why: str) -> AsyncIterator[None]:
        hashed = lock_key(key)
        session = await self._hold(hashed, exclusive=exclusive, wait=wait)
        if session is None:
            raise StoreUnavailable(f"advisory lock: {why} for over {wait:.0f} s")
        try:
            yield
        finally:
            await asyncio.to_thread(self._unlock, session, hashed, exclusive=exclusive)

    def fence(self, contact: str) -> bool:
        try:
            with self.engine.begin() as connection:
                connection.execute(text(f"SET LOCAL lock_timeout = {int(FENCE_WAIT * 1000)}"))
                connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(contact)})
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
                return False
            raise
        return True

    def close(self) -> None:
        with self._mutex:
            if self._session is not None:
                self._session.close()
                self._session = None

    async def _hold(self, key: int, *, exclusive: bool, wait: float) -> Connection | None:
        """Poll for `key` on the lock session: the session that holds it, or None after `wait` seconds.

        A cancelled wait leaves no lock behind: an attempt under way in its thread is undone once it returns.
        """
        deadline = time.monotonic() + wait
        delay = 0.001
        while True:
            attempt = asyncio.ensure_future(asyncio.to_thread(self._try, key, exclusive=exclusive))
            try:
                session = await asyncio.shield(attempt)
            except asyncio.CancelledError:
                attempt.add_done_callback(functools.partial(self._undo, key=key, exclusive=exclusive))
                raise
            if session is not None:
                return session
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _try(self, key: int, *, exclusive: bool) -> Connection | None:
        with self._mutex:
            held = self._held.get(key, 0)
            if held < 0 or (exclusive and held > 0):
                return None
            function = "pg_try_advisory_lock" if exclusive else "pg_try_advisory_lock_shared"
            session, locked = self._on_session(f"SELECT {function}(:k)", key)
            if not locked:
                return None
            self._held[key] = -1 if exclusive else held + 1
            return session

    def _undo(self, attempt: asyncio.Future[Connection | None], *, key: int, exclusive: bool) -> None:
        if not attempt.cancelled() and attempt.exception() is None and (session := attempt.result()) is not None:
            # A done callback runs on the event loop, which must not wait for the database.
            threading.Thread(target=self._unlock, args=(session, key), kwargs={"exclusive": exclusive}).start()

    def _on_session(self, sql: str, key: int) -> tuple[Connection, Any]:
        """Run `sql` on the lock session (the caller holds `_mutex`), reconnecting once if the server dropped it."""
        for retry in (False, True):
            if self._session is None:
                self._session = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            session = self._session
            try:
                return session, session.execute(text(sql), {"k": key}).scalar()
            except DBAPIError as exc:
                if retry or not exc.connection_invalidated:
                    raise
                # The server dropped the session (and with it the locks it held): start a new one.
                log.warning("contact locks: lock session lost, reconnecting")
                self._session = None
        raise AssertionError("unreachable")

    def _unlock(self, session: Connection, key: int, *, exclusive: bool) -> None:
        with self._mutex:
            held = self._held.pop(key)
            if held > 1:
                self._held[key] = held - 1
            if session is not self._session:
                return  # that session is gone, and its locks with it
            function = "pg_advisory_unlock" if exclusive else "pg_advisory_unlock_shared"
            try:
                session.execute(text(f"SELECT {function}(:k)"), {"k": key})
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                self._session = None  # gone: so are its locks


def _poll(attempt: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not attempt():
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True


async def _poll_async(attempt: Callable[[], bool], timeout: float) -> bool:
    """`_poll` without blocking the event loop (`attempt` must be quick: a non-blocking lock call)."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not attempt():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True
