"""The garbage collector set for the long-running processes (service.gc_tuning), checked in
processes of their own: the test process must keep CPython's settings (see tune_gc)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from service.gc_tuning import YOUNG_THRESHOLD
from tests.conftest import TEST_REDIS_URL

REPORT = "import gc, json; print(json.dumps([gc.get_threshold()[0], gc.get_freeze_count()]))"


def _run(code: str) -> tuple[int, int]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"REDIS_URL": TEST_REDIS_URL, "PATH": "/usr/bin:/bin"},
    )
    threshold, frozen = json.loads(done.stdout.strip().splitlines()[-1])
    return threshold, frozen


def test_tune_gc_freezes_start_up_and_raises_the_young_threshold() -> None:
    threshold, frozen = _run(f"from service.gc_tuning import tune_gc; tune_gc(); {REPORT}")
    assert threshold == YOUNG_THRESHOLD
    assert frozen > 1_000  # what starting Python built, at least


def test_a_cli_worker_runs_with_the_tuned_collector() -> None:
    """BatchWorker.run, the path of ``arq service.WorkerSettings``, tunes it; a worker driven
    from inside a test (main()) does not."""
    code = f"""
        import asyncio
        from service.engine.loop import BatchWorker
        from service.worker.options import worker_options
        from settings import load_settings

        options = worker_options(load_settings())
        options["redis_pool"].wait_for_work = False
        options.update(burst=True, poll_delay=0.01, handle_signals=False)
        asyncio.set_event_loop(asyncio.new_event_loop())
        BatchWorker(**options).run()  # an empty queue: the burst ends at once
        {REPORT}
    """
    threshold, frozen = _run(code)
    assert threshold == YOUNG_THRESHOLD
    assert frozen > 0
