"""The OpenFeature provider: an OpenFeature client resolves a rollout's version through the extension's assignment."""
from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from flask import Flask, jsonify, request
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from openfeature.provider.no_op_provider import NoOpProvider
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from flask_v2rollout import V2Rollout
from flask_v2rollout.bucketing import assign
from flask_v2rollout.openfeature import PROVIDER_NAME, V2RolloutProvider
from flask_v2rollout.testing import force_version
from helpers import build_app


@pytest.fixture
def host(tmp_path) -> Iterator[tuple[Flask, V2Rollout, InMemoryLogRecordExporter, str]]:
    """A host app whose /edge route asks OpenFeature for the version, then calculates in the same request."""
    ext = V2Rollout()
    ext.register("qb_td", v1=lambda x: "v1", v2=lambda x: "v2")
    app, _ = build_app(tmp_path / "instance", ext)

    @ext.user_loader
    def user():
        return request.args.get("uid")

    domain = f"test-{uuid.uuid4().hex}"  # the SDK's registry is global: a client of this test's own
    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    api.set_provider(V2RolloutProvider(ext, logger_provider=logger_provider), domain=domain)

    @app.get("/edge")
    def edge():
        client = api.get_client(domain=domain)
        details = client.get_string_details("qb_td", "v1")
        return jsonify(flag=client.get_string_value("qb_td", "v1"), served=ext.calculate("qb_td", 1).value,
                       reason=details.reason, variant=details.variant, metadata=dict(details.flag_metadata),
                       v2=client.get_boolean_value("qb_td", False))

    yield app, ext, logs, domain
    api.set_provider(NoOpProvider(), domain=domain)
    logger_provider.shutdown()


def set_percentage(app: Flask, ext: V2Rollout, pct: float) -> None:
    with app.app_context():
        ext.set_flag("qb_td", "v2_rollout_percentage", pct, actor="ops")


def test_get_string_value_in_a_request_is_the_version_the_extension_serves(host) -> None:
    app, ext, logs, _ = host
    set_percentage(app, ext, 50)
    client = app.test_client()
    answers = {f"user-{i}": client.get(f"/edge?uid=user-{i}").get_json() for i in range(200)}
    for uid, a in answers.items():
        assert a["flag"] == a["served"] == a["variant"] == assign(uid, 50, salt="qb_td"), uid
        assert a["reason"] == Reason.SPLIT and a["v2"] is (a["flag"] == "v2")
        assert a["metadata"]["percentage"] == 50.0 and a["metadata"]["version"]
    assert 70 <= sum(a["flag"] == "v2" for a in answers.values()) <= 130
    events = [r.log_record for r in logs.get_finished_logs() if r.log_record.event_name == "feature_flag.evaluation"]
    assert len(events) == 3 * 200  # string details, string value, boolean value
    first = dict(events[0].attributes or {})
    assert first["feature_flag.key"] == "qb_td" and first["feature_flag.provider.name"] == PROVIDER_NAME
    assert first["feature_flag.result.reason"] == "split"
    assert first["feature_flag.result.variant"] == answers["user-0"]["flag"]


@pytest.mark.parametrize("pct,version", [(0, "v1"), (100, "v2")])
def test_at_0_and_100_percent_everyone_gets_the_stage_version(host, pct: float, version: str) -> None:
    app, ext, _, _ = host
    set_percentage(app, ext, pct)
    client = app.test_client()
    for i in range(50):
        a = client.get(f"/edge?uid=u{i}").get_json()
        assert (a["flag"], a["served"], a["reason"]) == (version, version, Reason.STATIC)


def test_reasons_for_anonymous_pinned_unknown_and_outside_a_request(host) -> None:
    app, ext, _, domain = host
    set_percentage(app, ext, 50)
    client = app.test_client()
    anonymous = client.get("/edge").get_json()  # no uid: the loader answers None, the session id is used
    assert anonymous["flag"] == anonymous["served"]
    with force_version(app, "qb_td", "v2"):
        pinned = client.get("/edge?uid=user-1").get_json()
    assert (pinned["flag"], pinned["reason"]) == ("v2", Reason.TARGETING_MATCH)

    of = api.get_client(domain=domain)
    with app.app_context():
        unknown = of.get_string_details("nope", "v1")
        assert (unknown.value, unknown.reason, unknown.error_code) == ("v1", Reason.ERROR, ErrorCode.FLAG_NOT_FOUND)
        missing = of.get_string_details("qb_td", "v1")
        assert (missing.reason, missing.error_code) == (Reason.ERROR, ErrorCode.TARGETING_KEY_MISSING)
        keyed = of.get_string_details("qb_td", "v1", EvaluationContext(targeting_key="user-7"))
        assert (keyed.value, keyed.reason) == (assign("user-7", 50, salt="qb_td"), Reason.SPLIT)
        wrong_type = of.get_integer_details("qb_td", 0)
        assert (wrong_type.value, wrong_type.error_code) == (0, ErrorCode.TYPE_MISMATCH)
    with Flask("not_initialised").app_context():
        bare = of.get_string_details("qb_td", "v1", EvaluationContext(targeting_key="user-7"))
        assert (bare.value, bare.reason, bare.error_code) == ("v1", Reason.ERROR, ErrorCode.PROVIDER_NOT_READY)
    outside = of.get_string_details("qb_td", "v1", EvaluationContext(targeting_key="user-7"))
    assert (outside.value, outside.reason, outside.error_code) == ("v1", Reason.ERROR, ErrorCode.PROVIDER_NOT_READY)
