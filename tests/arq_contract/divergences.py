"""arq 0.28.0's own tests that fail against our engine on purpose, each with the reason.

tests/test_arq_contract.py runs arq's suite against service.engine.loop.BatchWorker and fails
if a test missing from this list fails, or if a listed one passes (the list must stay true).
Each entry was checked by running arq's suite with the difference undone in a scratch copy of
the engine (arq's log lines added, arq's count in the shutdown line, arguments kept in results):
all 172 tests then pass, so no listed test hides another failure.
"""

from __future__ import annotations

_NO_JOB_LINES = (
    "intended: the test reads arq's per-job '→ start' / '← ok' log lines, which the engine "
    "does not write (they cost CPU on every job); service/worker/observe.py writes one JSON "
    "line per job instead, with more in it"
)
_SHUTDOWN_COUNT = (
    "intended: the shutdown line's 'ongoing to cancel' counts the jobs the signal will cut "
    "(those whose own code still runs), not arq's len(self.tasks), which also counts ended "
    "tasks and jobs finishing their bookkeeping that the engine lets finish; the test's tasks "
    "are MagicMocks, one of them done, so it expects 2 where the engine counts 1"
)
_NO_RESULT_ARGUMENTS = (
    "intended: the test reads a finished job's arguments back from its stored result, which "
    "the engine writes without them (issue 18.2: a client's payload must not stay in Redis "
    "for JOB_RESULT_TTL); the service keeps a bounded copy of its own (service/records/"
    "arguments.py)"
)
DIVERGENCES: dict[str, str] = {
    "tests/test_cron.py::test_job_successful[0.0]": _NO_JOB_LINES,
    "tests/test_cron.py::test_job_successful[0.5]": _NO_JOB_LINES,
    "tests/test_cron.py::test_job_successful[0.9]": _NO_JOB_LINES,
    "tests/test_cron.py::test_job_successful_on_specific_queue": _NO_JOB_LINES,
    "tests/test_worker.py::test_job_successful": _NO_JOB_LINES,
    "tests/test_worker.py::test_job_successful_no_result_logging": _NO_JOB_LINES,
    "tests/test_worker.py::test_job_retry": _NO_JOB_LINES,
    "tests/test_worker.py::test_job_old": _NO_JOB_LINES,
    "tests/test_worker.py::test_max_bursts_sub_call": _NO_JOB_LINES,
    "tests/test_worker.py::test_max_bursts_multiple": _NO_JOB_LINES,
    "tests/test_worker.py::test_non_burst": _NO_JOB_LINES,
    "tests/test_worker.py::test_abort_job": _NO_JOB_LINES,
    "tests/test_worker.py::test_not_abort_job": _NO_JOB_LINES,
    "tests/test_worker.py::test_job_cancel_on_max_jobs": _NO_JOB_LINES,
    "tests/test_worker.py::test_handle_sig": _SHUTDOWN_COUNT,
    "tests/test_worker.py::test_handle_no_sig": _SHUTDOWN_COUNT,
    "tests/test_jobs.py::test_deserialize_result": _NO_RESULT_ARGUMENTS,
    "tests/test_jobs.py::test_enqueue_job": _NO_RESULT_ARGUMENTS,
    "tests/test_jobs.py::test_enqueue_job_alt_queue": _NO_RESULT_ARGUMENTS,
    "tests/test_jobs.py::test_enqueue_job_nondefault_queue": _NO_RESULT_ARGUMENTS,
}
