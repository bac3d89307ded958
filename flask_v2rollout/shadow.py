"""ShadowRunner: run the other version off the request path, bounded and counted.

A request only *submits* a job (a non-blocking put on a bounded queue: a full
queue drops the job and counts it). A small pool of daemon threads runs the
jobs; a supervisor marks a job that runs past its timeout as timed out, counts
it, and starts a replacement worker so the pool keeps its capacity — up to
``max_stuck`` threads that never came back, after which the queue fills and
new jobs are dropped (and counted). Memory stays bounded either way.

Threads start lazily in the process that submits, so an app created before a
fork (gunicorn ``--preload``) gets a working runner in every worker. The
extension calls :meth:`ShadowRunner.shutdown` at interpreter exit.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Protocol

from opentelemetry.trace import SpanContext

from .compare import FALLBACK, V2_ERROR, Comparison, compare_values
from .dispatch import Outcome
from .errors import Fallback
from .registry import Rollout

log = logging.getLogger("flask_v2rollout.shadow")


@dataclass
class ShadowJob:
    """Work for one shadow run; ``run`` does it, ``on_timeout`` / ``on_drop`` report otherwise."""

    run: Callable[[ShadowJob], None]
    on_timeout: Callable[[ShadowJob], None]
    on_drop: Callable[[ShadowJob, str], None]
    payload: Any = None
    started: float = 0.0
    timed_out: bool = False
    finished: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self) -> bool:
        """Called by ``run`` before it records a result: False once the job has timed out."""
        with self.lock:
            if self.timed_out or self.finished:
                return False
            self.finished = True
            return True

    def expire(self) -> bool:
        """Mark the job timed out unless its result was already recorded."""
        with self.lock:
            if self.finished or self.timed_out:
                return False
            self.timed_out = True
            return True


_STOP = object()


class ShadowRunner:
    """Bounded executor for shadow jobs; see the module docstring."""

    def __init__(
        self, *, workers: int, queue_size: int, timeout_s: float, shutdown_s: float, max_stuck: int | None = None,
    ) -> None:
        if workers < 1 or queue_size < 1 or timeout_s <= 0:
            raise ValueError("shadow runner needs workers ≥ 1, queue_size ≥ 1 and timeout_s > 0")
        self.workers = workers
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self.shutdown_s = shutdown_s
        self.max_stuck = workers * 4 if max_stuck is None else max_stuck
        self._pid: int | None = None
        self._start_lock = threading.Lock()
        #: run jobs on the submitting thread (tests): no queue, no timeout
        self.synchronous = False
        self._reset()

    def _reset(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(self.queue_size)
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # supervisor: a job started running after an idle spell
        self._idle = threading.Condition(lock)  # drain(): the count of unfinished jobs went down
        self._inflight: dict[int, ShadowJob] = {}
        self._unfinished = 0
        self._stuck = 0
        self._live = self.workers
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._pid = None

    # -- lifecycle ------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._pid == os.getpid():
            return
        with self._start_lock:
            if self._pid == os.getpid():
                return
            if self._pid is not None:  # inherited across fork: the parent's threads are gone here
                self._reset()
            for _ in range(self.workers):
                self._spawn_worker()
            supervisor = threading.Thread(target=self._supervise, name="v2rollout-shadow-supervisor", daemon=True)
            supervisor.start()
            self._threads.append(supervisor)
            self._pid = os.getpid()

    def _spawn_worker(self) -> None:
        thread = threading.Thread(target=self._work, name="v2rollout-shadow", daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- submit / drain ---------------------------------------------------------
    def submit(self, job: ShadowJob) -> bool:
        """Queue ``job`` without blocking; a full queue drops it (counted through ``on_drop``)."""
        if self.synchronous:
            job.started = time.monotonic()
            job.run(job)
            return True
        self._ensure_started()
        if self._queue.full():
            job.on_drop(job, "queue_full")
            return False
        with self._cond:
            if self._closed:
                closed = True
            else:
                closed = False
                self._unfinished += 1
        if closed:
            job.on_drop(job, "shutdown")
            return False
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._finish_one()
            job.on_drop(job, "queue_full")
            return False
        return True

    def _finish_one(self) -> None:
        with self._cond:
            self._unfinished -= 1
            self._idle.notify_all()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted job has finished or timed out; True if none is left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._unfinished > 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet finished (queued or running)."""
        with self._cond:
            return self._unfinished

    def shutdown(self) -> int:
        """Drain for up to ``shutdown_s``, then drop what is left; returns the number dropped."""
        if self._pid != os.getpid():
            return 0
        self.drain(self.shutdown_s)
        with self._cond:
            self._closed = True
        dropped = 0
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                job.on_drop(job, "shutdown")
                self._finish_one()
                dropped += 1
        for _ in range(self.workers):
            try:
                self._queue.put_nowait(_STOP)
            except queue.Full:
                break
        return dropped

    # -- threads ------------------------------------------------------------------
    def _work(self) -> None:
        """A worker's loop; should it ever end abnormally, a replacement takes its place."""
        normal = False
        try:
            normal = self._loop()
        finally:
            if not normal:
                log.error("v2rollout: a shadow worker stopped unexpectedly; starting a replacement")
                self._spawn_worker()

    def _loop(self) -> bool:
        """Run jobs until told to stop; True on a normal end (stop, or retired after a timeout)."""
        ident = threading.get_ident()
        while True:
            job = self._queue.get()
            if job is _STOP:
                return True
            job.started = time.monotonic()
            with self._cond:
                if not self._inflight:  # otherwise the supervisor already waits for an earlier deadline
                    self._cond.notify()
                self._inflight[ident] = job
            try:
                job.run(job)
            except BaseException:
                log.exception("v2rollout: shadow job failed")
            with self._cond:
                self._inflight.pop(ident, None)
                if not job.timed_out:
                    self._unfinished -= 1
                    self._idle.notify_all()
                    continue
                # The supervisor counted this job and may have replaced this thread.
                self._stuck -= 1
                if self._live >= self.workers:
                    return True
                self._live += 1

    def _supervise(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    expired = [
                        (ident, job) for ident, job in self._inflight.items()
                        if now - job.started >= self.timeout_s and job.expire()
                    ]
                    if expired:
                        break
                    waits = [job.started + self.timeout_s - now for job in self._inflight.values()]
                    self._cond.wait(max(0.001, min(waits)) if waits else None)
                replace = 0
                for ident, _job in expired:
                    self._inflight.pop(ident, None)
                    self._unfinished -= 1
                    self._stuck += 1
                    self._live -= 1
                    if self._stuck <= self.max_stuck:
                        self._live += 1
                        replace += 1
                self._idle.notify_all()
            for _ident, job in expired:
                job.on_timeout(job)
            for _ in range(replace):
                self._spawn_worker()


# -- shadow work of one calculate() call --------------------------------------------

COMPARE_ERROR = "compare_error"


class ShadowSinks(Protocol):
    """Where a shadow run's result goes (the request pipeline implements it)."""

    def running(self, job: ShadowJob) -> AbstractContextManager[None]:
        """The context a run executes in: the app context and the run's span."""

    def failed(self, work: ShadowWork, exc: BaseException) -> None: ...

    def compared(self, work: ShadowWork, comparison: Comparison, value: Any, duration_ms: float) -> None: ...

    def timed_out(self, job: ShadowJob) -> None: ...

    def dropped(self, job: ShadowJob, reason: str) -> None: ...


@dataclass
class ShadowWork:
    """A submitted shadow run: the other version, with the call's arguments as submitted.

    The arguments are shared with the request, not copied: calculators must not
    mutate them.
    """

    sinks: ShadowSinks
    rollout: Rollout
    version: str
    primary: Outcome
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    subject: str | None
    monitoring: bool
    #: the ``v2rollout.calculate`` span this run shadows (its link), None when nothing traced the call
    span: SpanContext | None
    submitted: float
    request_id: str | None = None


def shadow_job(work: ShadowWork) -> ShadowJob:
    """The runner's job for ``work``."""
    return ShadowJob(_run, _timed_out, _dropped, work)


def _run(job: ShadowJob) -> None:
    work: ShadowWork = job.payload
    rollout = work.rollout
    fn = rollout.v2 if work.version == "v2" else rollout.v1
    with work.sinks.running(job):
        start = perf_counter()
        value: Any = None
        failure: str | None = None
        try:
            value = fn(*work.args, **work.kwargs)
        except Fallback:
            failure = FALLBACK
        except BaseException as exc:  # whatever v2 raises off the path is its error, never the worker's end
            failure = V2_ERROR if work.version == "v2" else "v1_error"
            work.sinks.failed(work, exc)
        duration_ms = (perf_counter() - start) * 1000.0
        if not job.claim():
            return  # timed out: counted by the runner, result discarded
        comparison = _compare(work, value) if failure is None else Comparison(failure)
        work.sinks.compared(work, comparison, value, duration_ms)


def _compare(work: ShadowWork, value: Any) -> Comparison:
    v1_value, v2_value = (work.primary.value, value) if work.version == "v2" else (value, work.primary.value)
    try:
        return compare_values(v1_value, v2_value, extract=work.rollout.extract, comparator=work.rollout.compare)
    except Exception:
        log.exception("v2rollout: comparator of %r failed", work.rollout.name)
        return Comparison(COMPARE_ERROR)


def _timed_out(job: ShadowJob) -> None:
    work: ShadowWork = job.payload
    work.sinks.timed_out(job)


def _dropped(job: ShadowJob, reason: str) -> None:
    work: ShadowWork = job.payload
    work.sinks.dropped(job, reason)
