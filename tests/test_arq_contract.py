"""arq 0.28.0's own test suite, run against our engine's worker: the engine's contract.

The engine (service.engine.loop) replaces arq's job loop but must keep arq's behaviour, since
arq's API, CLI and keys are what the rest of the service and its users rely on. arq's own
tests say what that behaviour is, so `make test` runs them all against ``BatchWorker``: it
downloads arq's source distribution and builds a virtualenv for its tests under
``.venv/arq-contract`` (Makefile), and this test runs them there, in a subprocess (they need
pytest-asyncio 0.23 and its ``event_loop``; our suite uses a newer one), on a redis-server of
their own (they flush all of it). tests/arq_contract/plugin.py points arq's ``Worker`` at ours.

Every arq test must pass, except those in tests/arq_contract/divergences.py, which must fail:
a listed test that passes means the list is stale.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import redis as redis_py

from tests.arq_contract.divergences import DIVERGENCES
from tests.conftest import ping_answered

# Built by `make test` (Makefile: $(ARQ_CONTRACT_STAMP)) inside the virtualenv running this suite.
CONTRACT_DIR = Path(sys.prefix) / "arq-contract"
CONTRACT_PYTHON = CONTRACT_DIR / "venv" / "bin" / "python"
PLUGIN_DIR = Path(__file__).parent / "arq_contract"
# arq's suite takes ~25 s here (2 slow cores); 10 s of it is one listed test's own timeout.
RUN_TIMEOUT = 180


def _wait_until_answering(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while not ping_answered(redis_py.Redis.from_url(url, socket_connect_timeout=0.5)):
        assert process.poll() is None, "the private redis-server exited"
        assert time.monotonic() < deadline, "the private redis-server did not answer in 10 s"
        time.sleep(0.05)


def _outcomes(junit_xml: Path) -> dict[str, tuple[str, str]]:
    """Each test's node id -> (outcome, message): passed, failed (a failure or an error in
    any phase) or skipped."""
    outcomes: dict[str, tuple[str, str]] = {}
    for case in ElementTree.parse(junit_xml).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        node_id = f"{module}.py::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", child.get("message", "")
                break
            if child.tag == "skipped":
                outcome, message = "skipped", child.get("message", "")
        outcomes[node_id] = outcome, message
    return outcomes


def _run_arq_tests(
    node_ids: list[str], redis_address: str, junit_xml: Path
) -> dict[str, tuple[str, str]]:
    """Run arq's tests ``node_ids`` in their own virtualenv, with our plugin; their outcomes."""
    env = {**os.environ, "ARQ_CONTRACT_REDIS": redis_address, "PYTHONPATH": str(PLUGIN_DIR)}
    env.pop("PYTEST_ADDOPTS", None)
    plugins = ["-p", "plugin", "-p", "no:cacheprovider"]
    run = subprocess.run(
        [str(CONTRACT_PYTHON), "-m", "pytest", *plugins, f"--junitxml={junit_xml}", *node_ids],
        cwd=CONTRACT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    output = run.stdout + run.stderr
    assert "arq.worker.Worker is service.engine.loop.BatchWorker" in output, output[-3000:]
    assert run.returncode in (0, 1), output[-3000:]  # 1: some tests failed; else it broke
    return _outcomes(junit_xml)


@pytest.mark.timeout(2 * RUN_TIMEOUT + 30)
def test_arq_suite_passes_against_the_engine(
    private_redis: tuple[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    assert CONTRACT_PYTHON.exists(), (
        f"{CONTRACT_DIR} is missing: `make test` builds it (arq's tests and their virtualenv)"
    )
    url, process = private_redis
    _wait_until_answering(url, process)
    address = url.removeprefix("redis://").rsplit("/", 1)[0]
    outcomes = _run_arq_tests(["tests"], address, tmp_path / "arq-junit.xml")

    failed = {node: message for node, (outcome, message) in outcomes.items() if outcome == "failed"}
    unexpected = {node: message for node, message in failed.items() if node not in DIVERGENCES}
    passed = sum(outcome == "passed" for outcome, _ in outcomes.values())
    print(f"arq's suite: {passed} passed, {len(failed)} failed, of {len(outcomes)} collected")
    if unexpected:
        # Some of arq's tests time Redis calls or sleep 0.1 s for a job to end, which a
        # machine loaded by other work can miss: an unexpected failure must fail twice.
        again = _run_arq_tests(sorted(unexpected), address, tmp_path / "arq-junit-again.xml")
        flaky = sorted(node for node in unexpected if again.get(node, ("",))[0] == "passed")
        print("failed once, passed when run again:", ", ".join(flaky) or "none")
        unexpected = {node: message for node, message in unexpected.items() if node not in flaky}
    now_passing = sorted(node for node in DIVERGENCES if outcomes.get(node, ("",))[0] == "passed")
    not_run = sorted(node for node in DIVERGENCES if node not in outcomes)

    problems = []
    if unexpected:
        problems.append(
            "arq tests failing against the engine (fix the engine, or list them with the "
            "reason in tests/arq_contract/divergences.py):\n"
            + "\n".join(
                f"  {node}: {message[:300]}" for node, message in sorted(unexpected.items())
            )
        )
    if now_passing:
        problems.append(
            "listed in tests/arq_contract/divergences.py but passing now: take them off\n"
            + "\n".join(f"  {node}" for node in now_passing)
        )
    if not_run:
        problems.append(
            "listed in tests/arq_contract/divergences.py but not in arq's suite:\n"
            + "\n".join(f"  {node}" for node in not_run)
        )
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
