"""pytest plugin that runs arq 0.28.0's own test suite against our engine's worker class.

Loaded with ``-p plugin`` by tests/test_arq_contract.py, in the virtualenv `make test` builds
for arq's suite (tests/arq_contract/requirements.txt). It does two things before pytest
imports arq's conftest.py and test modules, which bind ``Worker`` at import:

- points ``arq.worker.Worker`` (what arq's conftest, ``run_worker`` and ``create_worker`` build)
  and ``arq.Worker`` (what test_cron and test_jobs import) at ``service.engine.loop.BatchWorker``,
  so every worker arq's tests start runs our job loop, as the arq CLI does in production;
- stands in for ``testcontainers.redis``: arq's conftest starts Redis in Docker, which this
  machine has not; our ``RedisContainer`` answers with the private redis-server the caller
  started (ARQ_CONTRACT_REDIS="host:port"), so no Docker and no extra package are needed.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType, TracebackType

import arq
import pytest

from service.engine.loop import BatchWorker, install

REDIS_ADDRESS_VARIABLE = "ARQ_CONTRACT_REDIS"


class RedisContainer:
    """What arq's conftest uses of testcontainers' RedisContainer, answered with the address of
    a redis-server that is already running (arq's tests flush it: it must be theirs alone)."""

    port = 6379  # the port inside the container, which get_exposed_port() maps

    def __init__(self, image: str = "redis:latest") -> None:
        address = os.environ.get(REDIS_ADDRESS_VARIABLE)
        if not address:
            raise RuntimeError(f"{REDIS_ADDRESS_VARIABLE} (host:port of a private Redis) is unset")
        host, _, port = address.rpartition(":")
        self._host, self._port = host, int(port)

    def __enter__(self) -> RedisContainer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None  # the server belongs to the caller, which stops it

    def get_container_host_ip(self) -> str:
        return self._host

    def get_exposed_port(self, port: int) -> int:
        return self._port


def _stand_in_testcontainers() -> None:
    package = ModuleType("testcontainers")
    package.__path__ = []
    redis_module = ModuleType("testcontainers.redis")
    redis_module.RedisContainer = RedisContainer  # type: ignore[attr-defined]
    package.redis = redis_module  # type: ignore[attr-defined]
    sys.modules["testcontainers"] = package
    sys.modules["testcontainers.redis"] = redis_module


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests() -> None:
    """Runs after ``-p`` plugins are imported and before any conftest.py is."""
    _stand_in_testcontainers()
    install()
    arq.Worker = BatchWorker  # type: ignore[misc]


def pytest_report_header() -> str:
    return f"arq contract: arq.worker.Worker is {BatchWorker.__module__}.{BatchWorker.__name__}"


def pytest_collection_finish(session: pytest.Session) -> None:
    """Refuse to run if any of arq's test modules bound a Worker other than ours."""
    for name, module in list(sys.modules.items()):
        worker = getattr(module, "Worker", BatchWorker) if name.startswith("tests") else None
        if worker not in (None, BatchWorker):
            raise pytest.UsageError(f"{name}.Worker is {worker!r}, not BatchWorker")


def pytest_configure(config: pytest.Config) -> None:
    """arq's suite turns warnings into errors and was locked to redis-py 4.6; with our pin
    (5.3.1) its fixtures' ``close()`` warns as deprecated, which our own suite ignores too."""
    config.addinivalue_line("filterwarnings", "ignore:Call to deprecated close:DeprecationWarning")
