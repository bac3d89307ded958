"""E2E building blocks: a throwaway PostgreSQL, real gunicorn masters, an HTTP driver, an OTLP receiver.

Everything listens on 127.0.0.1 only and waits on explicit conditions with deadlines, so a slow machine makes
tests slower, never flaky.
"""
from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import urlsplit

import psycopg
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from psycopg import sql

REPO_ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
POLL_S = 0.05  # interval between checks of a condition, never a wait for one
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def free_port() -> int:
    """A loopback port nobody holds right now (the kernel picks it, so parallel runs do not collide)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_user_exists() -> bool:
    """PostgreSQL refuses to run as root; as root we need this user to run it as."""
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return True


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return f"<{path} unreadable>"


# --- PostgreSQL -----------------------------------------------------------------------------------------------


class PostgresServer:
    """A PostgreSQL cluster of its own, so tests get real SQL (and real outages) without a shared server."""

    def __init__(self, base: Path, bin_dir: Path = PG_BIN) -> None:
        self.port = free_port()
        self.base = base
        self.log_path = base / "postgres.log"
        self._bin = bin_dir
        self._data = base / "data"
        self._as_postgres = os.geteuid() == 0
        self._running = False
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(base, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self._data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--no-locale", "--no-sync", "--no-instructions")

    @property
    def uri(self) -> str:
        return self.database_uri("postgres")

    def database_uri(self, name: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def start(self, timeout: float = 30.0) -> None:
        """Start on the same port and data directory; return once it accepts connections."""
        if self._running:
            raise RuntimeError("PostgreSQL is already running")
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories={shlex.quote(str(self.base))} -c fsync=off")
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._run("pg_ctl", "-D", str(self._data), "-l", str(self.log_path), "-W", "-o", options, "start")
        try:
            self._wait_ready(timeout, log_offset)
        except BaseException:
            with contextlib.suppress(RuntimeError):  # a slow server must not outlive us; a dead one refuses
                self.stop()
            raise
        self._running = True

    def stop(self) -> None:
        """Fast shutdown (clients disconnected, no checkpoint wait); pg_ctl returns once the server is gone."""
        self._run("pg_ctl", "-D", str(self._data), "-m", "fast", "stop")
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    @contextlib.contextmanager
    def frozen(self) -> Iterator[list[int]]:
        """SIGSTOP the postmaster and every backend: connections stay open, nothing answers, no error comes.

        The worst outage for a client: TCP still accepts and acknowledges, so only its own timeouts help.
        Everything stopped is continued on exit, whatever happened inside; yields the stopped pids.
        """
        postmaster = int((self._data / "postmaster.pid").read_text().split()[0])
        stopped: list[int] = []
        try:
            for pid in [postmaster, *child_pids(postmaster)]:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            yield stopped
        finally:
            for pid in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def create_database(self, name: str) -> str:
        """A fresh database, so each test's tables and rows are its own; returns its SQLAlchemy URL."""
        with self._connect("postgres") as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.database_uri(name)

    def _connect(self, dbname: str) -> psycopg.Connection[Any]:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname,
                               connect_timeout=2, autocommit=True)

    def _wait_ready(self, timeout: float, log_offset: int) -> None:
        """Poll real connections; fail at once, with the server log, if the postmaster gives up.

        The log is the reliable death notice: a postmaster that cannot bind removes its pid file within
        milliseconds, but always logs "database system is shut down" (lc_messages is C after --no-locale).
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._connect("postgres").close()
                return
            except psycopg.OperationalError as exc:
                error = exc
            if b"database system is shut down" in self._log_since(log_offset):
                raise RuntimeError(f"PostgreSQL exited during startup:\n{_tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL not ready after {timeout}s ({error}):\n{_tail(self.log_path)}")
            time.sleep(POLL_S)

    def _log_since(self, offset: int) -> bytes:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read()
        except FileNotFoundError:  # pg_ctl -W may return before the postmaster's shell opened the log
            return b""

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self._bin / tool), *args]
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        # cwd: the postgres user may not be allowed into the caller's working directory.
        done = subprocess.run(argv, cwd=self.base, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}):\n{done.stdout}{done.stderr}\n"
                               f"{_tail(self.log_path)}")


@contextlib.contextmanager
def postgres(bin_dir: Path = PG_BIN) -> Iterator[PostgresServer]:
    """A started server; stopped and its directory removed on exit, whatever happened inside."""
    base = Path(tempfile.mkdtemp(prefix="v2rollout-pg-"))
    try:
        server = PostgresServer(base, bin_dir)
        server.start()
        try:
            yield server
        finally:
            if server.running:
                server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- gunicorn -------------------------------------------------------------------------------------------------


def child_pids(pid: int) -> list[int]:
    """Live children of ``pid`` from /proc/*/stat (/proc/<pid>/task/*/children needs CONFIG_PROC_CHILDREN)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we scanned
            continue
        state, ppid = text[text.rindex(")") + 2:].split()[:2]
        if int(ppid) == pid and state != "Z":
            children.append(int(stat.parent.name))
    return sorted(children)


def _http_get(url: str, timeout: float = 2.0) -> int | None:
    """Status of a GET, or None while nothing answers."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/")
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


class GunicornServer:
    """A real gunicorn master: forked workers, signals and atexit behave as in production."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, stdout_path: Path, stderr_path: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        self._proc = proc

    @property
    def pid(self) -> int:
        return self._proc.pid

    def worker_pids(self) -> list[int]:
        return child_pids(self.pid)

    def wait_ready(self, health_path: str, workers: int, timeout: float) -> None:
        """Until the health path answers 200 and every worker is forked; gunicorn's stderr if it dies first."""
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self._proc.returncode}:\n{_tail(self.stderr_path)}")
            status = _http_get(self.url + health_path)
            if status == 200 and len(self.worker_pids()) == workers:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn not ready after {timeout}s (GET {health_path} -> {status}, "
                                   f"workers {self.worker_pids()}):\n{_tail(self.stderr_path)}")
            time.sleep(POLL_S)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM the master: workers finish their request and exit normally, so their atexit handlers run.

        Returns the master's exit code; kills the whole process group and raises if it overstays ``timeout``.
        """
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)  # its own session: the group is the master and its workers
            self._proc.wait(timeout)
            raise RuntimeError(
                f"gunicorn ignored SIGTERM for {timeout}s; killed:\n{_tail(self.stderr_path)}") from None


def start_gunicorn(app_spec: str, log_dir: Path, *, workers: int = 4, preload: bool = True,
                   env: Mapping[str, str] | None = None, threads: int = 1, timeout: int = 30,
                   health_path: str = "/healthz", ready_timeout: float = 30.0,
                   args: Sequence[str] = ()) -> GunicornServer:
    """Run ``python -m gunicorn app_spec`` from the repo root on a free loopback port; return once it serves.

    ``timeout`` is gunicorn's worker timeout; ``env`` is merged over os.environ; ``args`` are extra gunicorn
    options. stdout (access log, prints) and stderr (gunicorn's log) go to files in ``log_dir``.
    """
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    stdout_path, stderr_path = log_dir / f"gunicorn-{port}.stdout", log_dir / f"gunicorn-{port}.stderr"
    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), child_env.get("PYTHONPATH")) if p)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    argv = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
            "--threads", str(threads), "--timeout", str(timeout), "--access-logfile", "-",
            *(["--preload"] if preload else []), *args, app_spec]
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        # Own session: a Ctrl-C at the terminal reaches pytest (which stops us), and a kill can take the group.
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=child_env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, start_new_session=True)
    server = GunicornServer(proc, port, stdout_path, stderr_path)
    try:
        server.wait_ready(health_path, workers, ready_timeout)
    except BaseException:
        with contextlib.suppress(RuntimeError):
            server.stop(timeout=5)
        raise
    return server


# --- HTTP driver ----------------------------------------------------------------------------------------------

Request = tuple[str, str, Any, Mapping[str, str] | None]  # method, path, JSON body or None, headers or None


def drive(url: str, requests: Sequence[Request], concurrency: int = 8,
          timeout: float = 10.0) -> list[tuple[int, Any]]:
    """Send ``requests`` concurrently to a loopback server; (status, JSON or text) in request order.

    At most ``concurrency`` connections at once, each bounded by ``timeout`` seconds.
    """
    return [(status, body) for status, body, _ in drive_timed(url, requests, concurrency, timeout)]


def drive_timed(url: str, requests: Sequence[Request], concurrency: int = 8,
                timeout: float = 10.0) -> list[tuple[int, Any, float]]:
    """As :func:`drive`, with each request's latency in seconds (connect to the last byte of the response)."""
    base = urlsplit(url)
    if base.scheme != "http" or base.hostname not in LOOPBACK:
        raise ValueError(f"drive() only talks to loopback http servers, not {url!r}")
    prefix = base.path.rstrip("/")

    def send(request: Request) -> tuple[int, Any, float]:
        method, path, body, headers = request
        payload = None if body is None else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json"} if payload is not None else {}
        all_headers.update(headers or {})
        started = time.perf_counter()
        conn = http.client.HTTPConnection(base.hostname or "127.0.0.1", base.port, timeout=timeout)
        try:
            conn.request(method, prefix + path, body=payload, headers=all_headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        elapsed = time.perf_counter() - started
        if "json" in response.getheader("Content-Type", "") and data:
            return response.status, json.loads(data), elapsed
        return response.status, data.decode("utf-8", "replace"), elapsed

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(send, requests))


# --- OTLP/HTTP receiver ---------------------------------------------------------------------------------------


class SpanEvent(TypedDict):
    name: str
    attributes: dict[str, Any]


class SpanLink(TypedDict):
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


class Span(TypedDict):
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind: 1 internal, 2 server, 3 client, ...
    attributes: dict[str, Any]
    events: list[SpanEvent]
    links: list[SpanLink]
    status_code: int  # 0 unset, 1 ok, 2 error
    resource: dict[str, Any]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return None if kind is None else getattr(value, kind)


def _attributes(pairs: Sequence[KeyValue]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


def decode_spans(request: ExportTraceServiceRequest) -> list[Span]:
    """Protobuf spans as plain dicts, so tests compare with == instead of walking messages."""
    spans: list[Span] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                spans.append(Span(
                    name=s.name, trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                    parent_span_id=s.parent_span_id.hex(), kind=s.kind, attributes=_attributes(s.attributes),
                    events=[SpanEvent(name=e.name, attributes=_attributes(e.attributes)) for e in s.events],
                    links=[SpanLink(trace_id=link.trace_id.hex(), span_id=link.span_id.hex(),
                                    attributes=_attributes(link.attributes)) for link in s.links],
                    status_code=s.status.code, resource=dict(resource)))
    return spans


_ROUTES: dict[str, tuple[type[Message], type[Message]]] = {
    "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
    "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
    "/v1/logs": (ExportLogsServiceRequest, ExportLogsServiceResponse),
}


class _OtlpHandler(BaseHTTPRequestHandler):
    server: _OtlpHTTPServer

    def do_POST(self) -> None:
        route = _ROUTES.get(self.path)
        if route is None:
            self.send_error(404)
            return
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/x-protobuf":
            self.send_error(415, "only OTLP/HTTP protobuf is supported")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        request_type, response_type = route
        try:
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            message = request_type.FromString(body)
        except (DecodeError, OSError, EOFError) as exc:
            self.send_error(400, f"undecodable {request_type.__name__}: {exc}")
            return
        self.server.receiver.store(message)
        payload = response_type().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: one line per export would bury the test output that matters."""


class _OtlpHTTPServer(ThreadingHTTPServer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        super().__init__(("127.0.0.1", 0), _OtlpHandler)
        self.receiver = receiver


class OtlpReceiver:
    """A loopback OTLP/HTTP collector: what the app really exports, decoded for assertions."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._spans: list[Span] = []
        self._metrics: list[ExportMetricsServiceRequest] = []
        self._logs: list[ExportLogsServiceRequest] = []
        self._server = _OtlpHTTPServer(self)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(POLL_S,),
                                        name="otlp-receiver", daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
        if self._thread.is_alive():
            raise RuntimeError("OTLP receiver thread did not stop within 10 s")

    def store(self, message: Message) -> None:
        """Keep one decoded export and wake every ``wait_for_spans``."""
        with self._changed:
            if isinstance(message, ExportTraceServiceRequest):
                self._spans.extend(decode_spans(message))
            elif isinstance(message, ExportMetricsServiceRequest):
                self._metrics.append(message)
            elif isinstance(message, ExportLogsServiceRequest):
                self._logs.append(message)
            self._changed.notify_all()

    @property
    def spans(self) -> list[Span]:
        """A snapshot: exports keep arriving on server threads."""
        with self._changed:
            return list(self._spans)

    @property
    def metrics(self) -> list[ExportMetricsServiceRequest]:
        with self._changed:
            return list(self._metrics)

    @property
    def logs(self) -> list[ExportLogsServiceRequest]:
        with self._changed:
            return list(self._logs)

    def wait_for_spans(self, predicate: Callable[[list[Span]], bool], timeout: float = 10.0) -> list[Span]:
        """Block until ``predicate(all spans so far)`` holds (checked on every export); the spans then.

        Raises AssertionError with the span names seen when ``timeout`` passes first.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(list(self._spans)), timeout):
                names = [s["name"] for s in self._spans]
                raise AssertionError(f"no matching spans within {timeout}s; received {names}")
            return list(self._spans)

    def clear(self) -> None:
        with self._changed:
            self._spans.clear()
            self._metrics.clear()
            self._logs.clear()


def merged_metrics(uri: str, rollout: str, instance: Path, window: str = "1h") -> dict[str, Any]:
    """What every worker flushed to the store at ``uri``, read back by a separate app."""
    from flask import Flask

    from flask_v2rollout import V2Rollout

    app = Flask("reader", instance_path=str(instance))
    app.config["V2ROLLOUT_DATABASE_URI"] = uri
    ext = V2Rollout(app)
    ext.register(rollout, v1=abs, v2=abs)
    with app.app_context():
        return ext.metrics(rollout, window)
