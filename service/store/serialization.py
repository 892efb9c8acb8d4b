"""JSON job serialization for arq, instead of its default pickle.

Pickle would let anyone who can write to Redis run code in the worker, and it ties stored
jobs to Python class layouts. Exceptions (arq stores a failed job's exception as its result)
are kept as their type name and message, and come back as :class:`JobError`.
"""

from __future__ import annotations

import json
from typing import Any

EXCEPTION_TAG = "__exception__"

# json.dumps(value, separators=(",", ":"), ensure_ascii=False) without building an encoder per
# call, as json.dumps does for any non-default option: the bounded copies of a job's arguments
# (service.records.arguments) use it, as a failed job's copy must keep a NaN a client sent
compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class JobError(Exception):
    """A failed job's exception, rebuilt from its stored type name and message."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.message = message

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}" if self.message else self.type_name


def describe_exception(exc: BaseException) -> str:
    """One line naming the exception and its reason, as clients see it."""
    if isinstance(exc, JobError):
        return str(exc)
    message = str(exc)
    name = type(exc).__name__
    return f"{name}: {message}" if message else name


def _encode_extra(value: Any) -> Any:
    if isinstance(value, JobError):
        return {EXCEPTION_TAG: value.type_name, "message": value.message}
    if isinstance(value, BaseException):
        return {EXCEPTION_TAG: type(value).__name__, "message": str(value)}
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _decode_extra(value: dict[str, Any]) -> Any:
    if EXCEPTION_TAG in value and len(value) == 2 and "message" in value:
        return JobError(str(value[EXCEPTION_TAG]), str(value["message"]))
    return value


def serialize(data: dict[str, Any]) -> bytes:
    return json.dumps(data, default=_encode_extra, separators=(",", ":")).encode()


# one decoder for every job: json.loads(raw, object_hook=...) builds a new one per call, and
# guessing the encoding of bytes costs as much again (every stored job is UTF-8 JSON)
_DECODER = json.JSONDecoder(object_hook=_decode_extra)


def deserialize(raw: bytes | str) -> dict[str, Any]:
    text = raw if isinstance(raw, str) else raw.decode()
    data = _DECODER.decode(text)
    if not isinstance(data, dict):
        raise ValueError("a stored job must be a JSON object")
    return data
