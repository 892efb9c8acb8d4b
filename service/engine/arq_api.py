"""arq, fenced: every arq name the service uses beyond arq's documented API, checked at import.

arq 0.28 is maintenance-only upstream (python-arq/arq#510), so the job loop built on it
(service.engine.loop) is ours to keep. The loop subclasses arq's ``Worker``, overrides some of
its methods and reads some of its state; the records, the queue and the dashboard read arq's
keys and job format. None of that is arq's documented API (``from arq import cron, func,
Retry, create_pool``, ``arq.connections``), so a release could change any of it silently, and
the service would break at run time, somewhere. Instead, every such name is listed here and
checked when this module is imported:

- arq's version is the one the engine was built and tested against (:data:`TESTED_ARQ`);
- each Worker method the loop overrides or calls still exists with the same parameters, and
  arq's own code still calls the overridden ones (else an override would silently go unused);
- each Worker attribute the loop reads is still set by ``Worker.__init__``;
- the fields of ``Function``, ``CronJob`` and ``Retry``, the key prefixes, and the keys of a
  serialized job and result are the ones read elsewhere.

Anything that changed fails the import with :class:`ArqChanged`, naming it. Other modules
import arq's internals from here only: import-linter's contract "arq internals only through
service.engine.arq_api" (tools/import_contracts.py) enforces it, and tests/test_arq_fence.py
checks that the loop touches no Worker name missing from the lists below.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
from collections.abc import Callable
from types import CodeType, ModuleType
from typing import TYPE_CHECKING, Any

import arq.constants
import arq.jobs
import arq.typing
import arq.utils
import arq.version
import arq.worker

# `arq.cron` is the cron() function on arq's package (it re-exports it): take the module itself
arq_cron: ModuleType = importlib.import_module("arq.cron")

TESTED_ARQ = "0.28.0"


class ArqChanged(ImportError):
    """The installed arq is not the one service.engine was built against."""


def _changed(what: str) -> ArqChanged:
    return ArqChanged(
        f"arq {arq.version.VERSION}: {what}. The job loop (service.engine) relies on arq "
        f"{TESTED_ARQ}'s internals, each listed and checked in service/engine/arq_api.py; "
        "adapt the engine to the change (arq's own test suite runs against it in `make test`), "
        "then widen TESTED_ARQ."
    )


if arq.version.VERSION != TESTED_ARQ:
    raise _changed(f"the engine was built and tested against {TESTED_ARQ} only")


def _require(module: ModuleType, *names: str) -> None:
    missing = [name for name in names if not hasattr(module, name)]
    if missing:
        raise _changed(f"{module.__name__} has no {', '.join(missing)} any more")


_require(
    arq.constants,
    "job_key_prefix",
    "in_progress_key_prefix",
    "result_key_prefix",
    "retry_key_prefix",
    "abort_jobs_ss",
    "health_check_key_suffix",
)
_require(arq.jobs, "serialize_job", "serialize_result", "deserialize_job_raw", "SerializationError")
_require(arq.jobs, "DeserializationError")
_require(arq.utils, "timestamp_ms", "ms_to_datetime", "to_ms")
_require(arq.worker, "Function", "JobExecutionFailed", "RetryJob", "no_result", "create_worker")
_require(arq.worker, "run_worker", "check_health", "async_check_health")
_require(arq.worker, "keep_cronjob_progress")
_require(arq_cron, "CronJob", "next_cron")
_require(arq.typing, "WorkerCoroutine")

# --- arq's keys and job format, read and written by records, queue, dashboard and engine ---
job_key_prefix = arq.constants.job_key_prefix
in_progress_key_prefix = arq.constants.in_progress_key_prefix
result_key_prefix = arq.constants.result_key_prefix
retry_key_prefix = arq.constants.retry_key_prefix
abort_jobs_ss = arq.constants.abort_jobs_ss
health_check_key_suffix = arq.constants.health_check_key_suffix

serialize_job = arq.jobs.serialize_job
serialize_result = arq.jobs.serialize_result
deserialize_job_raw = arq.jobs.deserialize_job_raw
SerializationError = arq.jobs.SerializationError
DeserializationError = arq.jobs.DeserializationError

timestamp_ms = arq.utils.timestamp_ms
ms_to_datetime = arq.utils.ms_to_datetime
to_ms = arq.utils.to_ms

# --- the worker's parts the loop builds on ---
Worker = arq.worker.Worker
Function = arq.worker.Function
JobExecutionFailed = arq.worker.JobExecutionFailed
RetryJob = arq.worker.RetryJob
no_result = arq.worker.no_result
if TYPE_CHECKING:  # the same objects, as mypy can see them (`arq.cron` is shadowed, above)
    from arq.cron import CronJob as CronJob
    from arq.cron import next_cron as next_cron
else:
    CronJob = arq_cron.CronJob
    next_cron = arq_cron.next_cron
WorkerCoroutine = arq.typing.WorkerCoroutine

# Worker methods the loop overrides: name -> parameters arq's own version takes.
OVERRIDDEN_METHODS: dict[str, tuple[str, ...]] = {
    "run": ("self",),
    "main": ("self",),
    "close": ("self",),
    "_poll_iteration": ("self",),
    "record_health": ("self",),
    "handle_sig": ("self", "signum"),
    "handle_sig_wait_for_completion": ("self", "signum"),
    "finish_job": (
        "self",
        "job_id",
        "finish",
        "result_data",
        "result_timeout_s",
        "keep_result_forever",
        "incr_score",
        "keep_in_progress",
    ),
    "finish_failed_job": ("self", "job_id", "result_data"),
}
# Worker methods the loop calls without overriding them.
CALLED_METHODS: dict[str, tuple[str, ...]] = {
    "heart_beat": ("self",),
    "_cancel_aborted_jobs": ("self",),
    "_jobs_started": ("self",),
}
# Who in arq calls each override: the override is dead code if arq stops calling it.
CALLERS: dict[str, tuple[str, ...]] = {
    "close": ("run",),  # so a stopped worker waits for the jobs writing their bookkeeping
    "_poll_iteration": ("main",),
    "record_health": ("heart_beat",),
    "handle_sig": ("__init__", "close"),
    "handle_sig_wait_for_completion": ("__init__",),
    "finish_job": ("run_job",),
    "finish_failed_job": ("run_job",),
}
# Attributes arq's Worker.__init__ sets that the loop reads or writes.
WORKER_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "_handle_signals",
        "_job_completion_wait",
        "_last_health_check",
        "_last_health_check_log",
        "_pool",
        "after_job_end",
        "allow_abort_jobs",
        "allow_pick_jobs",
        "aborting_tasks",
        "burst",
        "ctx",
        "functions",
        "health_check_interval",
        "health_check_key",
        "in_progress_timeout_s",
        "job_counter",
        "job_deserializer",
        "job_serializer",
        "job_tasks",
        "job_timeout_s",
        "jobs_complete",
        "jobs_failed",
        "jobs_retried",
        "keep_result_forever",
        "keep_result_s",
        "loop",
        "main_task",
        "max_burst_jobs",
        "max_jobs",
        "max_tries",
        "on_job_end",
        "on_job_start",
        "on_shutdown",
        "on_stop",
        "queue_name",
        "queue_read_limit",
        "retry_jobs",
        "tasks",
    }
)
WORKER_PROPERTIES: frozenset[str] = frozenset({"pool"})
FUNCTION_FIELDS = frozenset(
    {"name", "coroutine", "timeout_s", "keep_result_s", "keep_result_forever", "max_tries"}
)
CRON_FIELDS = frozenset(
    {"name", "month", "day", "weekday", "hour", "minute", "second", "microsecond"}
)
# What serialize_job and serialize_result write, and records.status and the dashboard read.
JOB_FORMAT = frozenset({"t", "f", "a", "k", "et"})
RESULT_FORMAT = frozenset({"t", "f", "a", "k", "et", "s", "r", "st", "ft", "q", "id"})


def _code(function: Any) -> CodeType:
    code: CodeType = inspect.unwrap(function).__code__
    return code


def _names_used(function: Any) -> set[str]:
    """Global and attribute names a function's code refers to, nested functions included."""
    names: set[str] = set()
    pending = [_code(function)]
    while pending:
        code = pending.pop()
        names.update(code.co_names)
        pending.extend(c for c in code.co_consts if isinstance(c, CodeType))
    return names


def _check_methods() -> None:
    for name, parameters in (OVERRIDDEN_METHODS | CALLED_METHODS).items():
        method = getattr(Worker, name, None)
        if not callable(method):
            raise _changed(f"Worker.{name}() is gone")
        found = tuple(inspect.signature(method).parameters)
        if found != parameters:
            raise _changed(f"Worker.{name} now takes {found}, not {parameters}")
    for name, callers in CALLERS.items():
        for caller in callers:
            if name not in _names_used(getattr(Worker, caller)):
                raise _changed(
                    f"Worker.{caller}() no longer calls {name}(), which the loop overrides"
                )
    for name in WORKER_PROPERTIES:
        if not isinstance(inspect.getattr_static(Worker, name, None), property):
            raise _changed(f"Worker.{name} is no longer a property")


def _check_attributes() -> None:
    set_by_init = set(_code(Worker.__init__).co_names)
    missing = sorted(WORKER_ATTRIBUTES - set_by_init)
    if missing:
        raise _changed(f"Worker.__init__ no longer sets {', '.join(missing)}")
    if "defer_score" not in _code(arq.worker.Retry.__init__).co_names:
        raise _changed("Retry no longer has defer_score")
    if "Worker" not in _names_used(arq.worker.create_worker):
        raise _changed("create_worker() no longer builds arq.worker.Worker by name")
    if "run" not in _names_used(arq.worker.run_worker):  # the CLI's way in to Worker.run
        raise _changed("run_worker() no longer calls Worker.run(), which the loop overrides")


def _check_fields() -> None:
    for cls, wanted in ((Function, FUNCTION_FIELDS), (CronJob, CRON_FIELDS)):
        fields = {field.name for field in dataclasses.fields(cls)}
        if missing := sorted(wanted - fields):
            raise _changed(f"{cls.__name__} has no field {', '.join(missing)}")


def _check_format() -> None:
    """A job and a result serialized by arq carry the keys the service reads."""
    as_json: Callable[[dict[str, Any]], bytes] = lambda data: json.dumps(data).encode()  # noqa: E731
    job = json.loads(serialize_job("f", (), {}, 1, 0, serializer=as_json))
    result = serialize_result(
        "f", (), {}, 1, 0, True, None, 0, 0, "r", "q", job_id="j", serializer=as_json
    )
    for what, found, wanted in (
        ("job", set(job), JOB_FORMAT),
        ("result", set(json.loads(result or b"{}")), RESULT_FORMAT),
    ):
        if found != wanted:
            raise _changed(
                f"a serialized {what} has the keys {sorted(found)}, not {sorted(wanted)}"
            )


_check_attributes()
_check_methods()
_check_fields()
_check_format()


def cron_progress_seconds() -> float:
    """How long a cron run's in-progress key outlives it, so the same run is not queued again:
    arq's ``keep_cronjob_progress``, read from arq.worker when needed, as arq's run_job does."""
    return float(getattr(arq.worker, "keep_cronjob_progress"))  # noqa: B009 (a re-export)


def use_worker_class(worker_class: type[Worker]) -> None:
    """Make arq's CLI (``arq service.WorkerSettings``) build ``worker_class``: its
    ``create_worker`` looks ``Worker`` up by name in arq.worker (checked above)."""
    arq.worker.Worker = worker_class  # type: ignore[misc]


async_check_health = arq.worker.async_check_health


def use_health_check(check: Callable[[Any], int]) -> None:
    """Make arq's CLI (``arq service.WorkerSettings --check``) run ``check``: the CLI calls
    ``check_health`` by its name in arq.cli, where it imported it from arq.worker."""
    cli = importlib.import_module("arq.cli")
    if getattr(cli, "check_health", None) is not arq.worker.check_health:
        raise _changed("arq.cli no longer runs arq.worker.check_health for --check")
    setattr(cli, "check_health", check)  # noqa: B010 (a module mypy sees as typed)
