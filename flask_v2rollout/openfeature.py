"""An OpenFeature provider: hosts that evaluate flags through the OpenFeature Python SDK get a rollout's version.

The flag key is the rollout's name and the value its version (``"v1"``/``"v2"``; ``True`` for v2 as a boolean).
Resolution is the extension's own assignment — the one ``calculate()`` serves in the same request — so the SDK
and the extension never disagree about a user. Needs the ``openfeature`` extra (``openfeature-sdk``)::

    from openfeature import api
    from flask_v2rollout.openfeature import V2RolloutProvider

    api.set_provider(V2RolloutProvider(rollout))
    version = api.get_client().get_string_value("pricing", "v1")   # inside a request
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from flask import has_app_context, has_request_context
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagEvaluationDetails, FlagResolutionDetails, FlagValueType, Reason
from openfeature.hook import Hook, HookContext, HookHints
from openfeature.provider import AbstractProvider, Metadata
from opentelemetry import _logs as otel_logs

from .extension import V2Rollout
from .pipeline import Assignment
from .telemetry import (
    ERROR_TYPE,
    EVALUATION_EVENT,
    FF_KEY,
    FF_PROVIDER,
    FF_REASON,
    FF_VARIANT,
    FF_VERSION,
    PROVIDER_NAME,
)

SCOPE = "flask_v2rollout.openfeature"

T = TypeVar("T")


def reason_of(assignment: Assignment) -> Reason:
    """Why the user got this version, in OpenFeature's well-known reasons."""
    if assignment.pinned:
        return Reason.TARGETING_MATCH  # pinned (the testing kit), whatever the percentage says
    if assignment.flags.stale:
        return Reason.STALE  # flag store failing: last-known flags
    if assignment.user_id is None:
        return Reason.DEFAULT  # no user to bucket: v1
    pct = assignment.flags.percentage
    return Reason.STATIC if pct <= 0 or pct >= 100 else Reason.SPLIT


class EvaluationEvents(Hook):
    """Emits the ``feature_flag.evaluation`` event of every evaluation through this provider, with the
    attribute names the extension's own ``calculate()`` events use (semantic conventions v1.44)."""

    def __init__(self, logger_provider: otel_logs.LoggerProvider | None) -> None:
        self._logger = otel_logs.get_logger(SCOPE, logger_provider=logger_provider)

    def finally_after(self, hook_context: HookContext, details: FlagEvaluationDetails[FlagValueType],
                      hints: HookHints) -> None:
        attributes: dict[str, str] = {FF_KEY: details.flag_key, FF_PROVIDER: PROVIDER_NAME,
                                      FF_REASON: str(details.reason or Reason.UNKNOWN).lower()}
        if details.variant:
            attributes[FF_VARIANT] = details.variant
        if version := details.flag_metadata.get("version"):
            attributes[FF_VERSION] = str(version)
        if details.error_code:
            attributes[ERROR_TYPE] = str(details.error_code).lower()
        self._logger.emit(event_name=EVALUATION_EVENT, attributes=attributes)


class V2RolloutProvider(AbstractProvider):
    """Resolves ``flag_key`` = rollout name to the version the extension assigns.

    Inside a request the request's user is used (``user_loader``, Flask-Login, sticky session id); an
    evaluation context's ``targeting_key`` buckets that user id instead, in any app context.
    """

    def __init__(self, rollout: V2Rollout, *, logger_provider: otel_logs.LoggerProvider | None = None) -> None:
        """``logger_provider`` receives the evaluation events (``None``: the global one)."""
        super().__init__()
        self._rollout = rollout
        self._hooks: list[Hook] = [EvaluationEvents(logger_provider)]

    def get_metadata(self) -> Metadata:
        return Metadata(name=PROVIDER_NAME)

    def get_provider_hooks(self) -> list[Hook]:
        return list(self._hooks)

    def resolve_string_details(self, flag_key: str, default_value: str,
                               evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, lambda version: version)

    def resolve_boolean_details(self, flag_key: str, default_value: bool,
                                evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[bool]:
        """``True`` when the user is served v2."""
        return self._resolve(flag_key, default_value, evaluation_context, lambda version: version == "v2")

    def resolve_integer_details(self, flag_key: str, default_value: int,
                                evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[int]:
        return _mismatch(default_value, "integer")

    def resolve_float_details(self, flag_key: str, default_value: float,
                              evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[float]:
        return _mismatch(default_value, "float")

    def resolve_object_details(
        self, flag_key: str, default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return _mismatch(default_value, "object")

    def _resolve(self, flag_key: str, default_value: T, context: EvaluationContext | None,
                 value_of: Callable[[str], T]) -> FlagResolutionDetails[T]:
        if flag_key not in self._rollout.rollouts:
            return _error(default_value, ErrorCode.FLAG_NOT_FOUND, f"no rollout named {flag_key!r}")
        if not has_app_context():
            return _error(default_value, ErrorCode.PROVIDER_NOT_READY, "no Flask app context")
        key = (context.targeting_key if context is not None else None) or None
        if key is None and not has_request_context():
            return _error(default_value, ErrorCode.TARGETING_KEY_MISSING,
                          "outside a request, pass the user id as the evaluation context's targeting_key")
        try:
            assignment = self._rollout.assignment(flag_key, user_id=key)
        except RuntimeError as exc:  # the extension is not initialised on this app
            return _error(default_value, ErrorCode.PROVIDER_NOT_READY, str(exc))
        metadata: dict[str, bool | int | float | str] = {"percentage": assignment.flags.percentage}
        if assignment.flags.version is not None:
            metadata["version"] = str(assignment.flags.version)  # the flag row's version (semconv)
        return FlagResolutionDetails(value=value_of(assignment.version), reason=reason_of(assignment),
                                     variant=assignment.version, flag_metadata=metadata)


def _error(default_value: T, code: ErrorCode, message: str) -> FlagResolutionDetails[T]:
    return FlagResolutionDetails(value=default_value, reason=Reason.ERROR, error_code=code, error_message=message)


def _mismatch(default_value: T, kind: str) -> FlagResolutionDetails[T]:
    return _error(default_value, ErrorCode.TYPE_MISMATCH,
                  f"a rollout resolves to a string version (or a boolean: v2), not to {kind}")
