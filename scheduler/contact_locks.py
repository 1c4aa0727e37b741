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
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import logging
import os
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from scheduler.errors import StoreUnavailable

log = logging.getLogger(__name__)

SEND_WAIT = 30.0
"""Seconds a send waits for an opt-out's fence to pass (it is held for an instant) before it fails and retries."""
FENCE_WAIT = 60.0
"""Seconds an opt-out waits for the sends in flight to its contact (each bounded by its channel's timeout)."""


class ContactLocks(Protocol):
    def shared(self, contact: str) -> Any:
        """An async context manager held while a message to `contact` is checked and handed over."""
        ...

    def fence(self, contact: str) -> bool:
        """Wait until no send holds `contact` (blocking: run it in a thread); False if that took too long."""
        ...

    def close(self) -> None: ...


def lock_key(contact: str) -> int:
    """A signed 64-bit hash of a normalized contact (PostgreSQL's advisory-lock key)."""
    return int.from_bytes(hashlib.blake2b(contact.encode(), digest_size=8).digest(), "big", signed=True)


class FileLocks:
    """Byte-range locks on `path`, one fresh open per hold (OFD locks belong to the open, not the process)."""

    def __init__(self, path: str) -> None:
        self.path = path

    @asynccontextmanager
    async def shared(self, contact: str) -> AsyncIterator[None]:
        fd = self._open()
        try:
            if not await _poll_async(lambda: _async(_try_lock(fd, fcntl.F_RDLCK, contact)), SEND_WAIT):
                raise StoreUnavailable(f"contact lock {self.path}: an opt-out held it for over {SEND_WAIT:.0f} s")
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


def _try_lock(fd: int, kind: int, contact: str) -> bool:
    offset = lock_key(contact) & (2**62 - 1)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack(_FLOCK, kind, os.SEEK_SET, offset, 1, 0))
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


class AdvisoryLocks:
    """PostgreSQL advisory locks: shared ones on this process's lock session, the fence in a transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._mutex = threading.Lock()
        self._session: Connection | None = None

    @asynccontextmanager
    async def shared(self, contact: str) -> AsyncIterator[None]:
        key = lock_key(contact)
        held: list[Connection] = []

        def attempt() -> bool:
            session, locked = self._on_session("SELECT pg_try_advisory_lock_shared(:k)", key)
            if locked:
                held.append(session)
            return bool(locked)

        if not await _poll_async(lambda: asyncio.to_thread(attempt), SEND_WAIT):
            raise StoreUnavailable(f"contact lock: an opt-out held it for over {SEND_WAIT:.0f} s")
        try:
            yield
        finally:
            await asyncio.to_thread(self._unlock, held[0], key)

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

    def _on_session(self, sql: str, key: int) -> tuple[Connection, Any]:
        with self._mutex:
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

    def _unlock(self, session: Connection, key: int) -> None:
        with self._mutex:
            if session is not self._session:
                return  # that session is gone, and its locks with it
            try:
                session.execute(text("SELECT pg_advisory_unlock_shared(:k)"), {"k": key})
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


async def _poll_async(attempt: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not await attempt():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True


async def _async(value: bool) -> bool:
    return value
