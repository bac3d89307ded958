"""Identity of a SQLite store file, so one deleted or replaced under running processes is noticed.

A process keeps reading and writing an unlinked SQLite file through its open connections and
would report healthy, while a new process (the CLI) creates an empty file at the same path:
split brain. The store records the file's ``(st_dev, st_ino)`` when it first sees it and checks it
(one ``os.stat``) before each refresh and write.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy.engine import URL

from .errors import StoreFileError

_EXISTING_ONLY: ContextVar[bool] = ContextVar("v2rollout_existing_store_only", default=False)


@contextmanager
def existing_store_only() -> Iterator[None]:
    """Inside: a missing SQLite store file is an error, never created (operator commands act on a live store)."""
    token = _EXISTING_ONLY.set(True)
    try:
        yield
    finally:
        _EXISTING_ONLY.reset(token)


def sqlite_path(url: URL) -> str | None:
    """The absolute file path of a file-backed SQLite URL; None for other databases and in-memory SQLite."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    database = url.database
    if database.startswith("file:"):  # sqlite:///file:path?mode=…&uri=true
        database = database[len("file:"):].split("?", 1)[0]
        if not database or "mode=memory" in url.database:
            return None
    return os.path.abspath(database)


class StoreFile:
    """The SQLite file a process started with: check() raises StoreFileError once it is gone or replaced."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._identity: tuple[int, int] | None = None
        #: once an operator command used this store, a missing file stays an error (its exit flush too)
        self._must_exist = False

    def problem(self) -> str | None:
        """What is wrong with the file now (one stat), or None; records the identity on first sight."""
        self._must_exist = self._must_exist or _EXISTING_ONLY.get()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._identity is not None:
                return "was deleted while this process was using it"
            if self._must_exist:
                return "does not exist (deleted or moved, or the app never ran; the app creates it on first use)"
            return None
        identity = (st.st_dev, st.st_ino)
        if self._identity is None:
            self._identity = identity
        elif identity != self._identity:
            return "was replaced by another file while this process was using it"
        return None

    def check(self) -> None:
        problem = self.problem()
        if problem is not None:
            raise StoreFileError(self.path, problem)
