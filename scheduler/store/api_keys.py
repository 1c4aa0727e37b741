"""API keys: who may call the HTTP API, and what they may do (`read`, or `write` which also reads).

A key is `sk_` and 43 URL-safe characters (32 random bytes). The store keeps its SHA-256, never the key:
it is shown once, when it is created. A plain hash is enough because keys are random (there is no
dictionary to try, as there would be for a password). Revoking a key sets `revoked_at`; its row stays as
history and its name is never reused, so a name in a log always means one key.

The API looks keys up through a `KeyCache`: a key found is remembered for `CACHE_SECONDS`, so a revoked
key is refused by every API replica (they share the store) within that time, without a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from scheduler.errors import KeyNameInvalid, KeyNameTaken, UnknownKey
from scheduler.store import Store, api_keys_table, stored_utc

Scope = Literal["read", "write"]
SCOPES: tuple[Scope, ...] = ("read", "write")
PREFIX = "sk_"
MAX_NAME = 64
MAX_KEY = 256
"""A longer bearer token is no key of ours: refused without hashing it or asking the store."""
CACHE_SECONDS = 5.0
"""How long the API trusts a key it found (and the answer to "does any key exist?") before asking the store
again: the longest a revoked key still works."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CACHED_KEYS = 1024
ACTIVE = api_keys_table.c.revoked_at.is_(None)


class ApiKey(BaseModel):
    """A key as `scheduler keys list` shows it: never the key itself."""

    name: str
    scope: Scope
    created_at: datetime
    revoked_at: datetime | None = None

    def allows(self, scope: Scope) -> bool:
        """Whether this key may call a route that needs `scope` (a write key also reads)."""
        return self.scope == "write" or scope == "read"


def hash_key(key: str) -> str:
    """The SHA-256 of a key, in hex: what the store keeps and looks keys up by."""
    return hashlib.sha256(key.encode()).hexdigest()


def check_name(name: str) -> str:
    """A key's name as given, if it is one: 1 to 64 letters, digits, `.`, `_`, `-`, starting with a letter or digit.

    Raises:
        KeyNameInvalid: it is not.
    """
    if not name:
        raise KeyNameInvalid(name, "a name is required, e.g. 'ci-deploy'")
    if len(name) > MAX_NAME:
        raise KeyNameInvalid(name, f"at most {MAX_NAME} characters, got {len(name)}")
    if not _NAME.fullmatch(name):
        raise KeyNameInvalid(name, "only letters, digits, '.', '_' and '-', starting with a letter or a digit")
    return name


class Keys:
    """The API keys in the store. Synchronous: async callers use `asyncio.to_thread` (or a `KeyCache`)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, name: str, *, scope: Scope) -> tuple[ApiKey, str]:
        """A new key: its entry, and the key itself (which nothing can show again).

        Raises:
            KeyNameInvalid: `name` is not a key name (`check_name`).
            KeyNameTaken: a key, active or revoked, has that name.
        """
        check_name(name)
        if scope not in SCOPES:
            raise ValueError(f"scope must be 'read' or 'write', got {scope!r}")
        key = PREFIX + secrets.token_urlsafe(32)
        row = {"name": name, "scope": scope, "key_hash": hash_key(key), "created_at": datetime.now(UTC)}
        try:
            with self.store.engine.begin() as connection:
                connection.execute(api_keys_table.insert().values(row))
        except IntegrityError:
            existing = self.get(name)
            raise KeyNameTaken(name, revoked=existing is not None and existing.revoked_at is not None) from None
        return _entry(row), key

    def revoke(self, name: str) -> ApiKey:
        """Revoke the active key named `name`; its entry stays as history.

        Raises:
            UnknownKey: no active key has that name.
        """
        with self.store.engine.begin() as connection:
            done = connection.execute(
                update(api_keys_table).where(api_keys_table.c.name == name, ACTIVE).values(revoked_at=datetime.now(UTC))
            )
        entry = self.get(name)
        if done.rowcount == 0 or entry is None:
            raise UnknownKey(name)
        return entry

    def get(self, name: str) -> ApiKey | None:
        """The key named `name`, active or revoked."""
        with self.store.engine.connect() as connection:
            row = connection.execute(select(api_keys_table).where(api_keys_table.c.name == name)).first()
        return _entry(row._mapping) if row else None

    def all(self) -> list[ApiKey]:
        """Every key, revoked ones too, oldest first."""
        with self.store.engine.connect() as connection:
            return [
                _entry(row._mapping) for row in connection.execute(select(api_keys_table).order_by(api_keys_table.c.id))
            ]

    def find(self, key: str) -> ApiKey | None:
        """The active key whose value is `key`; None for an unknown or revoked one."""
        if not key.startswith(PREFIX) or len(key) > MAX_KEY:
            return None
        digest = hash_key(key)
        with self.store.engine.connect() as connection:
            row = connection.execute(select(api_keys_table).where(api_keys_table.c.key_hash == digest, ACTIVE)).first()
        # The index found the row; the comparison that decides is the constant-time one.
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return None
        return _entry(row._mapping)

    def any_active(self) -> bool:
        """Whether any key is active: then the API needs one on every protected route, on loopback too."""
        with self.store.engine.connect() as connection:
            return bool(connection.execute(select(func.count()).select_from(api_keys_table).where(ACTIVE)).scalar_one())


class KeyCache:
    """`Keys.find` and `Keys.any_active` for the API, each answer kept for `seconds` (0: ask the store every time).

    Only keys found are remembered: an unknown key asks the store each time, so nobody can fill the
    cache with guesses; it holds at most 1,024 keys.
    """

    def __init__(self, keys: Keys, *, seconds: float = CACHE_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.keys = keys
        self.seconds = seconds
        self.clock = clock
        self._found: dict[str, tuple[float, ApiKey]] = {}
        self._any: tuple[float, bool] | None = None

    async def find(self, key: str) -> ApiKey | None:
        now = self.clock()
        digest = hash_key(key)
        cached = self._found.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = await asyncio.to_thread(self.keys.find, key)
        if found is None:
            self._found.pop(digest, None)
        elif self.seconds > 0:
            if len(self._found) >= _CACHED_KEYS:
                self._found.clear()
            self._found[digest] = (now + self.seconds, found)
        return found

    async def any_active(self) -> bool:
        now = self.clock()
        if self._any is not None and self._any[0] > now:
            return self._any[1]
        active = await asyncio.to_thread(self.keys.any_active)
        if self.seconds > 0:
            self._any = (now + self.seconds, active)
        return active


def _entry(row: Any) -> ApiKey:
    return ApiKey(
        name=row["name"],
        scope=row["scope"],
        created_at=stored_utc(row["created_at"]),
        revoked_at=stored_utc(row["revoked_at"]) if row.get("revoked_at") else None,
    )
