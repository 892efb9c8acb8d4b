"""The jobs this service runs, as the overview lists them: from their declarations."""

from __future__ import annotations

from dataclasses import dataclass

from service.runtime import Registry
from settings import Settings


@dataclass(frozen=True, slots=True)
class DeclaredJob:
    name: str
    summary: str  # the first line of its docstring
    time_limit: float  # seconds
    max_tries: int
    keeps_result: bool
    api: bool  # POST /jobs may queue it
    scheduled: bool

    @property
    def queued_by(self) -> str:
        """How it gets queued: "POST /jobs", "cron", both, or its own route only."""
        ways = (["POST /jobs"] if self.api else []) + (["cron"] if self.scheduled else [])
        return ", ".join(ways) or "its own route"


def catalog(registry: Registry, settings: Settings) -> list[DeclaredJob]:
    """Every declared job, by name, with its limits under these settings."""
    return [
        DeclaredJob(
            name=job.name,
            summary=job.summary,
            time_limit=job.seconds(settings),
            max_tries=job.retry.tries(settings),
            keeps_result=job.keep_result,
            api=job.api,
            scheduled=job.cron is not None,
        )
        for job in sorted(registry, key=lambda job: job.name)
    ]
