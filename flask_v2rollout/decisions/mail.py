"""The email notifier (channel ``email``): one message per transition over SMTP (``smtplib``).

``smtplib``'s own timeout bounds each socket operation; :class:`_BoundedSMTP`
gives every connect, write and read what is left of the attempt's
:class:`~flask_v2rollout.decisions.delivery.Deadline` instead, so a server that
answers slowly line by line cannot hold the delivery thread past it.
"""
from __future__ import annotations

import contextlib
import io
import smtplib
import socket
import ssl
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from functools import partial
from typing import TYPE_CHECKING, Any

from .delivery import Deadline, DeadlineReader, DeliveryError, connect, deliver
from .notify import headline

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


def subject(payload: Mapping[str, Any]) -> str:
    """``[SEVERITY] rule on rollout``, marked when the alert resolved."""
    line = f"[{payload.get('severity', '?')}] {payload.get('rule', '?')}"
    if payload.get("rollout"):
        line += f" on {payload['rollout']}"
    return line + (" resolved" if payload.get("event") == "alert_resolved" else "")


def text(payload: Mapping[str, Any]) -> str:
    """The message body: the headline, the description, then every field on its own line."""
    lines = [headline(payload), ""]
    if payload.get("description"):
        lines += [str(payload["description"]), ""]
    for key in ("event", "rollout", "rule", "severity", "values", "action", "notify", "actor"):
        if key in payload:
            lines.append(f"{key}: {payload[key]}")
    if isinstance(payload.get("at"), (int, float)):
        lines.append("at: " + datetime.fromtimestamp(payload["at"], UTC).isoformat(timespec="seconds"))
    return "\n".join(lines) + "\n"


class _BoundedSMTP(smtplib.SMTP):
    """``smtplib.SMTP`` whose every socket operation is bounded by one deadline."""

    def __init__(self, host: str, port: int, deadline: Deadline) -> None:
        self.deadline = deadline
        super().__init__(host, port, local_hostname=socket.gethostname())  # getfqdn() could wait on DNS

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return connect(host, port, self.deadline)

    def send(self, s: ReadableBuffer | str) -> None:
        if self.sock is not None:
            self.deadline.bound(self.sock)
        super().send(s)

    def getreply(self) -> tuple[int, bytes]:
        if self.file is None and self.sock is not None:  # after connect and after STARTTLS
            self.file = io.BufferedReader(DeadlineReader(self.sock, self.deadline))
        return super().getreply()


class Email:
    """Mails alert transitions to a fixed list of recipients."""

    name = "email"
    channels: frozenset[str] | None = frozenset({"email"})

    def __init__(self, host: str, port: int, *, sender: str, recipients: Sequence[str], timeout_s: float,
                 retries: int, starttls: bool = True, user: str | None = None, password: str | None = None) -> None:
        self.host, self.port = host, port
        self.url = f"smtp://{host}:{port}"
        self.sender = sender
        self.recipients = list(recipients)
        self.timeout_s = timeout_s
        self.retries = retries
        self.starttls = starttls
        self._user, self._password = user, password

    def message(self, payload: Mapping[str, Any]) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = subject(payload)
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg.set_content(text(payload))
        return msg

    def send(self, payload: Mapping[str, Any]) -> bool:
        return deliver(self.name, partial(self._attempt, self.message(payload)), timeout_s=self.timeout_s,
                       retries=self.retries)

    def _attempt(self, msg: EmailMessage, deadline: Deadline) -> None:
        try:
            smtp = _BoundedSMTP(self.host, self.port, deadline)
        except smtplib.SMTPConnectError as exc:  # the greeting was not 220
            raise DeliveryError(f"SMTP {exc.smtp_code} {exc.smtp_error!r}", retry=True) from exc
        try:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self._user:
                smtp.login(self._user, self._password or "")
            smtp.send_message(msg, from_addr=self.sender, to_addrs=self.recipients)
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"SMTP {exc.smtp_code} {exc.smtp_error!r}", retry=400 <= exc.smtp_code < 500) from exc
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPNotSupportedError) as exc:
            raise DeliveryError(f"SMTP: {exc}", retry=False) from exc
        else:
            with contextlib.suppress(OSError):  # delivered: a failed goodbye must not send it again
                smtp.quit()
        finally:
            smtp.close()
