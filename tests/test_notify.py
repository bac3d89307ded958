"""Notifications against real loopback receivers: HTTP (webhook, Slack, PagerDuty) and SMTP.

Hung and trickling receivers hold their answer on events the test controls, so
every assertion about "not yet delivered" is about event order, not timing.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import multiprocessing as mp
import shutil
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from flask_v2rollout import V2Rollout
from flask_v2rollout.cli import cli
from flask_v2rollout.decisions.mail import Email
from flask_v2rollout.decisions.notify import Router
from flask_v2rollout.decisions.pagerduty import PagerDuty
from flask_v2rollout.decisions.slack import Slack
from flask_v2rollout.decisions.webhook import Webhook
from helpers import free_port_url, require

WAIT = 10.0  # the longest any wait below may take before the test fails

FIRED = {"event": "alert_fired", "rule": "v2_very_high_error_rate", "severity": "CRITICAL", "kind": "fired",
         "at": 1_900_000_000.0, "values": {"v2_error_rate_pct": 12.5}, "rollout": "calc",
         "description": "more than 10 % of v2 calculations raise an error", "action": "automatic rollback to 0 %",
         "notify": ["pagerduty", "slack"]}
RESOLVED = {**FIRED, "event": "alert_resolved", "kind": "resolved"}


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> Any:
        return json.loads(self.raw)


class Receiver:
    """A loopback HTTP endpoint. ``mode``: ``answer`` (the next of ``statuses``, then 204), ``hold`` (no answer
    until ``release`` is set) or ``trickle`` (a 200 response, one byte every 0.2 s). ``answered`` is set as the
    server starts its answer."""

    def __init__(self, protocol: str = "HTTP/1.1", tls: tuple[str, str] | None = None) -> None:
        self.mode = "answer"
        self.statuses: list[int] = []
        self.requests: list[Request] = []
        self.arrived = threading.Condition()
        self.release = threading.Event()
        self.answered = threading.Event()
        self.stop = threading.Event()
        self.trickled_all = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = protocol

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                mode = receiver.mode
                with receiver.arrived:
                    receiver.requests.append(Request(self.path, dict(self.headers), raw))
                    status = receiver.statuses.pop(0) if receiver.statuses else 204
                    receiver.arrived.notify_all()
                try:
                    if mode == "trickle":
                        self.trickle()
                        return
                    if mode == "hold":
                        receiver.release.wait(60)
                    receiver.answered.set()
                    answer = b'{"status": "success"}'  # read by the client after the headers
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the client gave up first

            def trickle(self) -> None:
                response = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100
                for byte in response:
                    if receiver.stop.wait(0.2):  # the pace of a trickling server, not a synchronisation
                        return
                    self.connection.sendall(bytes([byte]))
                receiver.trickled_all.set()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        scheme, host = ("https", "localhost") if tls else ("http", "127.0.0.1")
        self.url = f"{scheme}://{host}:{self.server.server_address[1]}/hook"

    def wait_for(self, count: int) -> list[Request]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.requests) >= count, timeout=WAIT), self.requests
            return list(self.requests)

    def close(self) -> None:
        self.stop.set()
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(mode: str = "answer", **options: Any) -> Receiver:
        receiver = Receiver(**options)
        receiver.mode = mode
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.close()


def counters(router: Router) -> dict[str, Any]:
    return dict(router.counters())


# -- off the decision path ----------------------------------------------------------------------------------------

def test_route_only_queues_and_a_hung_webhook_gives_up_at_its_deadline(receivers) -> None:
    hung = receivers("hold")
    router = Router([Webhook(hung.url, timeout_s=0.5, retries=0)])
    assert router.route(FIRED, ["pagerduty"]) == 1
    assert counters(router) == {"sent": {}, "failed": {}, "dropped": {}, "pending": 1}  # queued, not delivered
    hung.wait_for(1)
    assert router.drain(WAIT)
    assert counters(router)["failed"] == {"webhook": 1}
    assert not hung.answered.is_set() and not hung.release.is_set()  # it gave up; the server never answered
    hung.mode = "answer"
    assert router.route(RESOLVED, ["pagerduty"]) == 1  # the lane goes on with later payloads
    assert router.drain(WAIT)
    assert counters(router)["sent"] == {"webhook": 1}
    assert hung.wait_for(2)[1].body["event"] == "alert_resolved"


def test_a_trickling_server_cannot_extend_the_deadline(receivers) -> None:
    slow = receivers("trickle")
    router = Router([Webhook(slow.url, timeout_s=0.5, retries=0)])
    router.route(FIRED, ["slack"])
    slow.wait_for(1)
    assert router.drain(WAIT)
    assert counters(router)["failed"] == {"webhook": 1}
    assert not slow.trickled_all.is_set()  # each byte came within any per-read timeout; the total ran out


def test_a_hung_channel_holds_back_no_other(receivers) -> None:
    hung, slack = receivers("hold"), receivers()
    router = Router([Webhook(hung.url, timeout_s=60, retries=0), Slack(slack.url, timeout_s=5, retries=0)])
    assert router.route(FIRED, ["slack"]) == 2
    slack.wait_for(1)
    hung.wait_for(1)
    assert not hung.answered.is_set()
    hung.release.set()
    assert router.drain(WAIT)
    assert counters(router)["sent"] == {"webhook": 1, "slack": 1}


def test_a_full_queue_drops_and_counts(receivers) -> None:
    hung = receivers("hold")
    router = Router([Webhook(hung.url, timeout_s=60, retries=0)], queue_size=1)
    assert router.route(FIRED, ["slack"]) == 1
    hung.wait_for(1)  # the delivery thread holds the first; the queue is empty again
    assert router.route(FIRED, ["slack"]) == 1
    assert router.route(RESOLVED, ["slack"]) == 0
    assert counters(router)["dropped"] == {"webhook": {"queue_full": 1}}
    assert counters(router)["pending"] == 2
    hung.release.set()
    assert router.drain(WAIT)
    assert counters(router) == {"sent": {"webhook": 2}, "failed": {}, "dropped": {"webhook": {"queue_full": 1}},
                                "pending": 0}


def test_retries_on_5xx_and_429_but_not_on_other_4xx(receivers) -> None:
    flaky = receivers()
    flaky.statuses = [503, 429]
    assert Webhook(flaky.url, timeout_s=5, retries=2).send(FIRED)
    assert len(flaky.wait_for(3)) == 3
    refused = receivers()
    refused.statuses = [400]
    assert not Webhook(refused.url, timeout_s=5, retries=2).send(FIRED)
    assert len(refused.wait_for(1)) == 1
    assert not Webhook(free_port_url(), timeout_s=5, retries=1).send(FIRED)  # connection refused, twice


def test_delivery_threads_start_again_in_a_forked_child(receivers) -> None:
    hook = receivers()
    router = Router([Webhook(hook.url, timeout_s=5, retries=0)])
    router.route(FIRED, ["slack"])
    assert router.drain(WAIT)
    here, there = mp.get_context("fork").Pipe()

    def child() -> None:
        router.route(RESOLVED, ["slack"])
        router.drain(WAIT)
        there.send(dict(router.counters()))

    process = mp.get_context("fork").Process(target=child)
    process.start()
    assert here.poll(WAIT)
    assert here.recv() == {"sent": {"webhook": 1}, "failed": {}, "dropped": {}, "pending": 0}
    process.join(WAIT)
    assert [r.body["event"] for r in hook.wait_for(2)] == ["alert_fired", "alert_resolved"]
    assert counters(router)["sent"] == {"webhook": 1}


# -- transports -----------------------------------------------------------------------------------------------------

def test_webhook_posts_the_payload_signed_over_timestamp_and_body(receivers) -> None:
    hook = receivers()
    assert Webhook(hook.url, timeout_s=5, retries=0, secret="s3cret", wall_clock=lambda: 1_900_000_123.9).send(FIRED)
    request = hook.wait_for(1)[0]
    assert request.body == FIRED and request.headers["Content-Type"] == "application/json"
    timestamp = request.headers["X-V2Rollout-Timestamp"]
    assert timestamp == "1900000123"
    # the receiver's check, as docs/operations.md shows it
    expected = "sha256=" + hmac.new(b"s3cret", timestamp.encode() + b"." + request.raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-V2Rollout-Signature"], expected)
    forged = "sha256=" + hmac.new(b"s3cret", b"1900000999." + request.raw, hashlib.sha256).hexdigest()
    assert not hmac.compare_digest(request.headers["X-V2Rollout-Signature"], forged)
    assert Webhook(hook.url, timeout_s=5, retries=0).send(FIRED)
    assert "X-V2Rollout-Signature" not in hook.wait_for(2)[1].headers


def test_slack_gets_one_readable_line(receivers) -> None:
    slack = receivers()
    assert Slack(slack.url, timeout_s=5, retries=0).send(FIRED)
    assert slack.wait_for(1)[0].body == {"text": "[CRITICAL] v2_very_high_error_rate fired on calc: "
                                                 "v2_error_rate_pct=12.5 — action: automatic rollback to 0 %"}


def test_pagerduty_triggers_and_resolves_one_incident(receivers) -> None:
    events = receivers(protocol="HTTP/1.0")  # answers with a body, then closes
    events.statuses = [202, 202]
    router = Router([PagerDuty("R0UTING", url=events.url + "/v2/enqueue", timeout_s=5, retries=0, source="web-1")])
    assert router.route(FIRED, ["pagerduty", "slack"]) == 1
    assert router.route(FIRED, ["slack"]) == 0  # not this rule's channel
    assert router.route(RESOLVED, ["pagerduty"]) == 1
    assert router.drain(WAIT)
    trigger, resolve = (r.body for r in events.wait_for(2))
    assert events.requests[0].path == "/hook/v2/enqueue"
    assert trigger == {
        "routing_key": "R0UTING", "event_action": "trigger", "dedup_key": "calc/v2_very_high_error_rate",
        "payload": {"summary": "[CRITICAL] v2_very_high_error_rate fired on calc: v2_error_rate_pct=12.5 — action: "
                               "automatic rollback to 0 %",
                    "severity": "critical", "source": "web-1", "component": "calc",
                    "class": "v2_very_high_error_rate", "group": "flask-v2rollout",
                    "custom_details": {k: FIRED[k] for k in ("values", "description", "action", "notify", "at")}}}
    assert resolve == {"routing_key": "R0UTING", "event_action": "resolve", "dedup_key": "calc/v2_very_high_error_rate"}
    assert counters(router)["sent"] == {"pagerduty": 2}


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[str, str]:
    """A self-signed certificate and key for ``localhost``."""
    require(shutil.which("openssl") is not None, "openssl makes the test certificate")
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_https_verifies_the_certificate(receivers, certificate, monkeypatch) -> None:
    cert, _key = certificate
    slack = receivers(tls=certificate)
    assert not Slack(slack.url, timeout_s=5, retries=0).send(FIRED)  # self-signed: not trusted
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    assert Slack(slack.url, timeout_s=5, retries=0).send(FIRED)
    assert slack.wait_for(1)[0].body["text"].startswith("[CRITICAL] v2_very_high_error_rate fired on calc")


@pytest.mark.parametrize(("runbook", "pagerduty"), [
    ("CRITICAL", "critical"), ("HIGH", "error"), ("MEDIUM", "warning"), ("LOW", "info")])
def test_pagerduty_severity_follows_the_runbook(runbook: str, pagerduty: str) -> None:
    event = PagerDuty("k", timeout_s=1, retries=0).event({**FIRED, "severity": runbook})
    assert event["payload"]["severity"] == pagerduty


class Mailbox:
    """An aiosmtpd handler keeping every envelope."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.arrived = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.arrived:
            self.envelopes.append(envelope)
            self.arrived.notify_all()
        return "250 OK"


    def wait(self) -> Any:
        with self.arrived:
            assert self.arrived.wait_for(lambda: self.envelopes, timeout=WAIT)
            return self.envelopes[0]


@pytest.fixture
def smtp_server():
    """Starts an aiosmtpd server on a free loopback port; returns its mailbox (``port`` set)."""
    controllers: list[Controller] = []

    def start(**options: Any) -> Mailbox:
        box = Mailbox()
        with socket.socket() as sock:  # aiosmtpd needs a fixed port
            sock.bind(("127.0.0.1", 0))
            box.port = sock.getsockname()[1]
        controller = Controller(box, hostname="127.0.0.1", port=box.port, **options)
        controller.start()
        controllers.append(controller)
        return box

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture
def mailbox(smtp_server) -> Mailbox:
    return smtp_server()


def test_email_reaches_the_smtp_server(mailbox) -> None:
    from email import message_from_bytes
    from email.policy import default

    email = Email("127.0.0.1", mailbox.port, sender="alerts@example.org", recipients=["ops@example.org", "qa@x.org"],
                  timeout_s=5, retries=0, starttls=False)
    router = Router([email])
    assert router.route(FIRED, ["email"]) == 1
    assert router.drain(WAIT)
    envelope = mailbox.wait()
    assert envelope.mail_from == "alerts@example.org" and envelope.rcpt_tos == ["ops@example.org", "qa@x.org"]
    message = message_from_bytes(envelope.original_content, policy=default)
    assert message["Subject"] == "[CRITICAL] v2_very_high_error_rate on calc"
    assert message["To"] == "ops@example.org, qa@x.org"
    body = message.get_content()
    assert body.startswith("[CRITICAL] v2_very_high_error_rate fired on calc: v2_error_rate_pct=12.5")
    assert "more than 10 % of v2 calculations raise an error" in body and "at: 2030-03-17T17:46:40+00:00" in body
    assert counters(router)["sent"] == {"email": 1}


def test_email_upgrades_with_starttls_and_logs_in(smtp_server, certificate, monkeypatch) -> None:
    from aiosmtpd.smtp import AuthResult

    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    logins: list[tuple[bytes, bytes]] = []
    sessions: set[Any] = set()

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        logins.append((auth_data.login, auth_data.password))
        sessions.add(session.peer)  # the client's address: one per connection
        return AuthResult(success=auth_data.password == b"pw", handled=False)

    box = smtp_server(tls_context=context, require_starttls=True, authenticator=authenticator)
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    email = Email("localhost", box.port, sender="a@example.org", recipients=["ops@example.org"], timeout_s=5,
                  retries=0, user="alerts", password="pw")
    assert email.send(RESOLVED)
    assert box.wait().rcpt_tos == ["ops@example.org"] and logins == [(b"alerts", b"pw")]
    wrong = Email("localhost", box.port, sender="a@example.org", recipients=["ops@example.org"], timeout_s=5,
                  retries=2, user="alerts", password="nope")
    assert not wrong.send(RESOLVED)
    assert len(sessions) == 2  # 535 is final: no second connection


def test_an_smtp_server_that_never_greets_is_given_up_at_the_deadline() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        router = Router([Email("127.0.0.1", silent.getsockname()[1], sender="a@b.c", recipients=["d@e.f"],
                               timeout_s=0.5, retries=0, starttls=False)])
        router.route(FIRED, ["email"])
        assert router.drain(WAIT)
    assert counters(router)["failed"] == {"email": 1}


def test_an_unreachable_smtp_server_is_a_counted_failure() -> None:
    port = int(free_port_url().rsplit(":", 1)[1].split("/")[0])
    router = Router([Email("127.0.0.1", port, sender="a@b.c", recipients=["d@e.f"], timeout_s=1, retries=0,
                           starttls=False)])
    router.route(FIRED, ["email"])
    assert router.drain(WAIT)
    assert counters(router)["failed"] == {"email": 1}


# -- through the app -----------------------------------------------------------------------------------------------

def test_only_configured_transports_are_made(make_app) -> None:
    ext = V2Rollout()
    ext.register("calc", v1=abs, v2=abs)
    app, _ = make_app(ext, V2ROLLOUT_WEBHOOK_URL="http://127.0.0.1:9/h", V2ROLLOUT_SLACK_WEBHOOK_URL="http://x/s",
                      V2ROLLOUT_PAGERDUTY_ROUTING_KEY="k", V2ROLLOUT_SMTP_HOST="127.0.0.1",
                      V2ROLLOUT_SMTP_TO="ops@example.org, qa@example.org")
    notifiers = app.extensions["v2rollout"].notifications.notifiers
    assert [n.name for n in notifiers] == ["webhook", "slack", "pagerduty", "email"]
    assert notifiers[3].recipients == ["ops@example.org", "qa@example.org"]
    assert app.extensions["v2rollout"].health()["notifications"] == {"sent": {}, "failed": {}, "dropped": {},
                                                                      "pending": 0}
    app2, _ = make_app(ext, instance="other", V2ROLLOUT_SLACK_WEBHOOK_URL="http://x/s")
    assert [n.name for n in app2.extensions["v2rollout"].notifications.notifiers] == ["slack"]
    with pytest.raises(RuntimeError, match="V2ROLLOUT_SMTP_TO"):
        make_app(ext, instance="third", V2ROLLOUT_SMTP_HOST="127.0.0.1")


def test_test_alert_waits_for_delivery_but_no_longer_than_the_deadline(make_app, receivers) -> None:
    hung = receivers("hold")
    ext = V2Rollout()
    ext.register("calc", v1=abs, v2=abs)
    app, _ = make_app(ext, V2ROLLOUT_WEBHOOK_URL=hung.url, V2ROLLOUT_NOTIFY_TIMEOUT_S=0.5, V2ROLLOUT_NOTIFY_RETRIES=0)
    result = app.test_cli_runner().invoke(cli, ["test-alert", "--actor", "ops"])
    assert result.exit_code == 1 and "not delivered" in result.output
    assert hung.wait_for(1)[0].body["event"] == "alert_test" and not hung.answered.is_set()


CRITICAL_RULE = """
rules:
  - name: v2_very_high_error_rate
    condition: v2_error_rate_pct > 10%
    severity: CRITICAL
    notify: [pagerduty, slack]
    description: more than 10 % of v2 calculations raise an error
    action: automatic rollback to 0 %
"""


def test_a_critical_alert_rolls_back_while_its_webhook_hangs(make_app, receivers, tmp_path: Path) -> None:
    hung = receivers("hold")
    rules = tmp_path / "rules.yaml"
    rules.write_text(CRITICAL_RULE)

    def v2(x: int) -> float:
        if x % 4 == 0:
            raise KeyError("opponent")  # 25 % errors
        return float(x)

    ext = V2Rollout()
    ext.register("calc", v1=float, v2=v2)
    app, _ = make_app(ext, V2ROLLOUT_RUNBOOK_FILE=str(rules), V2ROLLOUT_WEBHOOK_URL=hung.url,
                      V2ROLLOUT_NOTIFY_TIMEOUT_S=60, V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 100},
                      V2ROLLOUT_EVALUATE_EVERY_S=10**9)
    notifications = app.extensions["v2rollout"].notifications
    with app.app_context():
        for i in range(40):
            ext.calculate("calc", i, user_id=f"u{i}")
        assert ext.flush()
        report = ext.evaluate()["calc"]
        # evaluate() has returned with the rollback made, while the webhook still holds the alert unanswered
        assert report["auto_rollback"] is True
        fired = [t["rule"] for t in report["transitions"]]
        assert "v2_very_high_error_rate" in fired  # with the packaged HIGH and MEDIUM error rules
        audit = [r for r in ext.audit("calc") if r["actor"] == "auto-rollback" and r["flag"] == "v2_rollout_percentage"]
        assert len(audit) == 1 and audit[0]["new_value"] == 0.0
        assert not hung.answered.is_set() and notifications.counters()["pending"] == len(fired)
    hung.release.set()
    assert notifications.drain(WAIT)
    assert hung.answered.is_set() and notifications.counters()["sent"] == {"webhook": len(fired)}
    bodies = {r.body["rule"]: r.body for r in hung.wait_for(len(fired))}
    body = bodies["v2_very_high_error_rate"]
    assert (body["event"], body["rule"], body["rollout"], body["severity"]) == (
        "alert_fired", "v2_very_high_error_rate", "calc", "CRITICAL")
