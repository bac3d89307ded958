"""One calculation: run the assigned version, fall back to v1, build the Outcome.

Every exception a calculator raises is caught and carried in the Outcome, so the
caller counts the call before anything reaches the user: ``BaseException`` kinds
too (``GeneratorExit``, a library's own ``BaseException`` subclasses) — from v2
they are v2 errors and fall back like any other. Only a real process exit
(``KeyboardInterrupt``, ``SystemExit``) is never swallowed: it is carried in
``raised`` and re-raised after counting.
"""
from __future__ import annotations

import contextvars
import os
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from .errors import Fallback

Calculator = Callable[..., Any]

#: exceptions that end the process: counted, never turned into a fallback
PROCESS_EXITS: tuple[type[BaseException], ...] = (KeyboardInterrupt, SystemExit)
#: the fallback reason of a v2 call that missed its deadline
DEADLINE = "deadline"


@dataclass(slots=True)
class Outcome:
    """What one ``calculate()`` call produced."""

    rollout: str
    value: Any
    #: version whose value was served: "v1" or "v2"
    version: str
    #: version the user was assigned
    assigned: str
    #: why v1 was served to a v2-assigned user (``Fallback`` reason or ``exception:<Type>``)
    fallback_reason: str | None
    duration_ms: float
    #: qualified class name of the v2 exception that caused a fallback
    error_type: str | None = None
    user_id: str | None = None
    #: the v2 exception itself (for telemetry); never re-raised once v1 was served
    error: BaseException | None = None
    #: the exception that must reach the caller (v1's, v2's with fallback off, or a process exit)
    raised: BaseException | None = None

    @property
    def fell_back(self) -> bool:
        return self.fallback_reason is not None


def qualified_name(exc: BaseException) -> str:
    return qualified_name_of(type(exc))


def run(
    name: str,
    v1: Calculator,
    v2: Calculator,
    assigned: str,
    fallback_enabled: bool,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    user_id: str | None,
    deadline: Deadline | None = None,
) -> Outcome:
    """Serve ``assigned``; on a v2 failure (or a missed ``deadline``) serve v1 when fallback is enabled.

    Never raises for a calculator's exception: the returned Outcome carries it in
    ``raised`` (v1's exceptions, v2's when fallback is off, process exits) so the
    caller can count the call before re-raising it unchanged.
    """
    start = perf_counter()
    reason = error_type = error = None
    if assigned == "v2":
        try:
            value = v2(*args, **kwargs) if deadline is None else deadline.call(v2, args, kwargs)
        except Fallback as fb:
            if not fallback_enabled:
                return _failed(name, "v2", assigned, start, fb, user_id)
            reason = fb.reason
        except DeadlineExceeded:
            if not fallback_enabled:
                return _failed(name, "v2", assigned, start, DeadlineExceeded(deadline), user_id)
            reason = DEADLINE
        except PROCESS_EXITS as exc:
            return _failed(name, "v2", assigned, start, exc, user_id)
        except BaseException as exc:
            if not fallback_enabled:
                return _failed(name, "v2", assigned, start, exc, user_id)
            reason, error_type, error = f"exception:{type(exc).__name__}", qualified_name(exc), exc
        else:
            return Outcome(name, value, "v2", "v2", None, (perf_counter() - start) * 1000.0, user_id=user_id)
    try:
        value = v1(*args, **kwargs)
    except BaseException as exc:
        return _failed(name, "v1", assigned, start, exc, user_id, reason=reason, v2_error=error)
    return Outcome(
        name, value, "v1", assigned, reason, (perf_counter() - start) * 1000.0,
        error_type=error_type, user_id=user_id, error=error,
    )


def _failed(
    name: str, version: str, assigned: str, start: float, exc: BaseException, user_id: str | None,
    *, reason: str | None = None, v2_error: BaseException | None = None,
) -> Outcome:
    error = v2_error if v2_error is not None else exc
    return Outcome(
        name, None, version, assigned, reason, (perf_counter() - start) * 1000.0,
        error_type=qualified_name(error), user_id=user_id, error=error, raised=exc,
    )


def exception_chain(exc: BaseException, depth: int = 5) -> Iterable[BaseException]:
    """``exc`` and what caused it (``__cause__``, else ``__context__``), at most ``depth`` links."""
    seen: BaseException | None = exc
    for _ in range(depth):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def matches(exc: BaseException, qualified_names: frozenset[str]) -> bool:
    """Is ``exc`` (or its cause) an instance of a class named in ``qualified_names``? Imports nothing."""
    return any(qualified_name_of(cls) in qualified_names
               for link in exception_chain(exc) for cls in type(link).__mro__)


def qualified_name_of(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


class DeadlineExceeded(Exception):
    """v2 did not answer within its deadline (``register(..., v2_timeout_ms=…)``)."""

    def __init__(self, deadline: Deadline | None) -> None:
        ms = deadline.timeout_s * 1000.0 if deadline is not None else float("nan")
        super().__init__(f"v2 did not answer within {ms:g} ms")


class Deadline:
    """Runs v2 on a few daemon threads and waits at most ``timeout_s`` for it.

    Python cannot stop a thread: a v2 that misses its deadline keeps its thread until
    it returns, and its late result is discarded (``on_late`` counts it). The call
    runs in a copy of the caller's context, so Flask's ``g``, ``request`` and the
    current span are those of the request. When every thread is busy, new calls wait
    in the queue — still bounded by the deadline. Daemon threads (not a
    ``ThreadPoolExecutor``, which joins its threads at exit) so a hung v2 never
    keeps a worker process from exiting.
    """

    def __init__(self, timeout_s: float, *, workers: int, on_late: Callable[[], None]) -> None:
        self.timeout_s = timeout_s
        self._workers = workers
        self._on_late = on_late
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Future[Any], contextvars.Context, Calculator, tuple[Any, ...],
                                             Mapping[str, Any]]] = queue.SimpleQueue()
        self._threads = 0
        self._pid = os.getpid()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's threads do not exist here
                self._reset()
            if self._threads < self._workers:
                self._threads += 1
                threading.Thread(target=self._work, name="v2rollout-deadline", daemon=True).start()

    def _work(self) -> None:
        while True:
            future, context, fn, args, kwargs = self._queue.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(context.run(fn, *args, **kwargs))
            except BaseException as exc:  # carried to the caller, whatever it is
                future.set_exception(exc)

    def call(self, fn: Calculator, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        self._ensure_thread()
        future: Future[Any] = Future()
        self._queue.put((future, contextvars.copy_context(), fn, args, kwargs))
        try:
            return future.result(timeout=self.timeout_s)
        except FutureTimeout:
            if not future.cancel():  # already running: its result, whenever it comes, is discarded
                future.add_done_callback(lambda _f: self._on_late())
            raise DeadlineExceeded(self) from None
