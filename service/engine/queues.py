"""Where a job waits: one arq queue (a sorted set scored by when the job is due) per named
queue and priority, and the rule that orders them.

The layout keeps arq's own key for the jobs arq knows: a normal-priority job of the
``default`` queue waits in QUEUE_NAME itself, so arq's job API, arq's workers and the arq
contract tests read it as before. Every other pair has a key of its own beside it:

====================  ==========================
queue, priority       key (QUEUE_NAME=arq:queue)
====================  ==========================
default, normal       ``arq:queue``
default, high         ``arq:queue:high``
images, normal        ``arq:queue:images``
images, low           ``arq:queue:images:low``
====================  ==========================

so a worker pool (WORKER_QUEUES) claims from its own keys only, and a priority costs no
sorting: each key is already oldest first. The claim (service.engine.claim) merges the due
heads of its keys by *effective due time*: a job's due time plus ``rank * ageing`` (high 0,
normal 1, low 2 steps of PRIORITY_AGEING_SECONDS). Among jobs due within one step of each
other, higher priority starts first, and within a priority the oldest; a job that has waited
one step longer than another counts one level higher, so under steady high-priority load a
low job waits at most two steps more than the high jobs queued with it: none starves.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from service.store import keys

Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = get_args(Priority)
NORMAL: Priority = "normal"
DEFAULT_QUEUE = "default"
RANK: dict[Priority, int] = {"high": 0, "normal": 1, "low": 2}
# lower-case words, so a queue's key cannot be mistaken for a priority's or arq's own keys
# (arq:queue:health-check); the priorities themselves are refused for the same reason
QUEUE_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,39}")


class QueueNameError(ValueError):
    """A queue name that is not a lower-case word, or is a priority's name."""


def check_queue_name(name: str) -> str:
    """``name`` when it can name a queue, else QueueNameError saying why."""
    if not QUEUE_NAME_PATTERN.fullmatch(name) or name in PRIORITIES:
        raise QueueNameError(
            f"{name!r} cannot name a queue: use a lower-case word (a-z, 0-9, _), "
            f"not {', '.join(PRIORITIES)}"
        )
    return name


def check_priority(name: str) -> Priority:
    """``name`` as a Priority, else ValueError naming the allowed ones."""
    for priority in PRIORITIES:
        if name == priority:
            return priority
    raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, not {name!r}")


def queue_key(base: str, queue: str, priority: Priority = NORMAL) -> str:
    """The sorted set holding ``queue``'s jobs of ``priority`` (module docstring)."""
    name = base if queue == DEFAULT_QUEUE else f"{base}:{queue}"
    return name if priority == NORMAL else f"{name}:{priority}"


def queue_keys(base: str, queue: str) -> list[str]:
    """``queue``'s keys, highest priority first."""
    return [queue_key(base, queue, priority) for priority in PRIORITIES]


def wake_key(base: str, queue: str) -> str:
    """The wake list of ``queue`` (service.engine.wakeup): one per queue, so an enqueue wakes
    a worker that serves it, not one of another pool."""
    return keys.wake(base if queue == DEFAULT_QUEUE else f"{base}:{queue}")


@dataclass(frozen=True, slots=True)
class QueueLayout:
    """Every queue the registry declares, and each job's queue and default priority."""

    base: str  # QUEUE_NAME: arq's key, the default queue's normal priority
    # each job (and cron schedule, "cron:<job>") by name: its queue and default priority
    routes: Mapping[str, tuple[str, Priority]] = field(default_factory=dict)
    extra_queues: tuple[str, ...] = ()  # queues no job declares (a bench's, a test's)

    @property
    def queues(self) -> tuple[str, ...]:
        """Every queue, ``default`` first, then by name."""
        named = {queue for queue, _ in self.routes.values()} | set(self.extra_queues)
        return (DEFAULT_QUEUE, *sorted(named - {DEFAULT_QUEUE}))

    def route(self, function: str, priority: Priority | None = None) -> tuple[str, Priority]:
        """Where a job of ``function`` goes: its declared queue, at ``priority`` or its
        declared one (a function nothing declares: the default queue, normal)."""
        queue, declared = self.routes.get(function, (DEFAULT_QUEUE, NORMAL))
        return queue, priority or declared

    def keys_of(self, queue: str) -> list[str]:
        """``queue``'s keys, highest priority first."""
        return queue_keys(self.base, queue)

    def all_keys(self) -> list[str]:
        """Every queue's keys: where a job may be, whatever its queue and priority; arq's
        own (the default queue's normal one) first."""
        others = [key for queue in self.queues for key in self.keys_of(queue)]
        return [self.base, *(key for key in others if key != self.base)]

    def unknown(self, queues: Iterable[str]) -> list[str]:
        """Those of ``queues`` the layout does not have."""
        return [queue for queue in queues if queue not in self.queues]


def ageing_offsets(served: Iterable[str], base: str, ageing_ms: int) -> list[tuple[str, int]]:
    """The claim's keys for a worker serving ``served`` queues, each with the milliseconds
    its jobs' due times count later (module docstring), the default queue's normal key first:
    with only normal jobs the claim reads it first, as before there were priorities."""
    pairs = [
        (queue_key(base, queue, priority), RANK[priority] * ageing_ms)
        for queue in served
        for priority in PRIORITIES
    ]
    return sorted(pairs, key=lambda pair: pair[0] != base)
