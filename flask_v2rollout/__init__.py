"""Flask-V2Rollout: roll a calculation from v1 to v2, safely and observably."""
from .dispatch import Outcome
from .errors import (
    ConflictError,
    Fallback,
    FlagError,
    GateError,
    MissingTablesError,
    RolloutError,
    StoreFileError,
    UnknownRollout,
)
from .extension import V2Rollout
from .flags import FLAG_NAMES

__all__ = [
    "V2Rollout",
    "Fallback",
    "Outcome",
    "FLAG_NAMES",
    "RolloutError",
    "FlagError",
    "ConflictError",
    "GateError",
    "StoreFileError",
    "MissingTablesError",
    "UnknownRollout",
]
