"""One delivery attempt under a total deadline, retried with exponential backoff.

Why not ``requests``: its ``timeout`` bounds each socket operation, so a server
that sends a byte now and then holds the caller as long as it likes (urllib3's
``Timeout(total=…)`` caps the connect plus *each* read; httpx's timeouts are per
operation too). Here every blocking call gets what is left of one monotonic
:class:`Deadline` as its socket timeout: the connect to each address, the TLS
handshake and ``sendall`` (whose timeout is their total duration since Python
3.5), and each read of the response, through :class:`DeadlineReader`. An attempt
therefore ends by its deadline whatever the peer does; only name resolution is
left to the system resolver's own timeout. ``http.client`` still writes the
request and parses the response. Requests go direct: proxy variables are not
read.
"""
from __future__ import annotations

import io
import logging
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from http.client import HTTPConnection, HTTPException, HTTPResponse
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger("flask_v2rollout.alerts")

#: response bytes read at most (for the log); the status line is what counts
MAX_RESPONSE_BYTES = 64 * 1024
BACKOFF_S = 0.2


class Deadline:
    """A point on the monotonic clock; :meth:`left` raises ``TimeoutError`` once it has passed."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        remaining = self.at - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("delivery deadline passed")
        return remaining

    def bound(self, sock: socket.socket) -> None:
        """Give the socket's next blocking call no more than what is left."""
        sock.settimeout(self.left())


class DeadlineReader(io.RawIOBase):
    """A socket's reads, each bounded by what is left of the deadline (a trickle cannot extend it).

    It reads through the socket's own ``makefile`` stream, which keeps the socket
    open while it is read even after its connection object let go of it.
    """

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        super().__init__()
        self.sock = sock
        self.deadline = deadline
        self.stream = sock.makefile("rb", buffering=0)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int | None:
        self.deadline.bound(self.sock)
        return self.stream.readinto(buffer)

    def close(self) -> None:
        self.stream.close()
        super().close()


class DeliveryError(Exception):
    """An attempt that failed; ``retry``: another attempt may succeed (429, 5xx, SMTP 4xx)."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


def connect(host: str, port: int, deadline: Deadline) -> socket.socket:
    """A TCP connection to the first address that answers within the deadline."""
    error: OSError = OSError(f"{host}: no address")
    for family, kind, proto, _name, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            deadline.bound(sock)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error


def post(url: str, body: bytes, headers: Mapping[str, str], deadline: Deadline) -> int:
    """POST ``body`` to an http(s) URL within ``deadline``; returns the status code."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryError(f"not an http(s) URL: {parts.scheme}://{parts.hostname}", retry=False)
    https = parts.scheme == "https"
    sock = connect(parts.hostname, parts.port or (443 if https else 80), deadline)
    conn = HTTPConnection(parts.hostname, parts.port)
    try:
        if https:
            deadline.bound(sock)
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
        deadline.bound(sock)
        conn.sock = sock
        conn.response_class = _bounded_response(deadline)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("POST", target, body=body, headers={"Connection": "close", **headers})
        response = conn.getresponse()
        response.read(MAX_RESPONSE_BYTES)
        return response.status
    finally:
        conn.close()
        sock.close()


def check_status(status: int) -> None:
    """2xx is delivered; 429 and 5xx are worth a retry, anything else is not."""
    if not 200 <= status < 300:
        raise DeliveryError(f"HTTP {status}", retry=status == 429 or status >= 500)


def deliver(name: str, attempt: Callable[[Deadline], Any], *, timeout_s: float, retries: int) -> bool:
    """Run ``attempt`` up to ``retries + 1`` times, each under its own deadline; False (logged) if none succeeded.

    Connection errors, timeouts and :class:`DeliveryError` with ``retry`` are retried after
    0.2 s, 0.4 s, 0.8 s …; other errors are not. Never raises.
    """
    failure = "no attempt"
    for number in range(retries + 1):
        if number:
            time.sleep(BACKOFF_S * 2 ** (number - 1))  # backoff on the delivery thread, not a synchronisation
        try:
            attempt(Deadline(timeout_s))
            return True
        except DeliveryError as exc:
            failure, retry = str(exc), exc.retry
        except (OSError, HTTPException) as exc:
            failure, retry = f"{type(exc).__name__}: {exc}", True
        except Exception as exc:  # a bad setting (say, a malformed URL) or a bug: another attempt would not help
            log.exception("v2rollout: alert %s could not be sent", name)
            failure, retry = f"{type(exc).__name__}: {exc}", False
        if not retry:
            break
    log.error("v2rollout: alert %s failed after %d attempt(s): %s", name, number + 1, failure)
    return False


def _bounded_response(deadline: Deadline) -> type[HTTPResponse]:
    class Response(HTTPResponse):
        """``http.client``'s response parser reading through a :class:`DeadlineReader`."""

        def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
            super().__init__(sock, *args, **kwargs)
            self.fp.close()
            self.fp = io.BufferedReader(DeadlineReader(sock, deadline))

    return Response
