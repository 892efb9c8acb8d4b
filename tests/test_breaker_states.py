"""The circuit breaker's states in Redis (service.records.breakers), step by step with a
clock the test gives: consecutive failures, opening at once, one probe, the doubled cool-down
and its cap, and the bounds on what a destination key holds."""

from __future__ import annotations

import asyncio

from arq import Retry
from arq.connections import ArqRedis

from service.engine.arq_api import retry_key_prefix
from service.records import breakers
from service.records.breakers import Failure, Limits
from service.runtime import PermanentError, TransientError
from service.store import keys
from service.store.database import DatabaseUnavailableError
from service.worker.breakers import transient_cause

HOST = breakers.webhook_destination("hooks.example.com")
LIMITS = Limits(threshold=5, cooldown=30.0, cooldown_max=100.0, max_tracked=3)
T0 = 1_800_000_000_000  # ms
LEASE = 10.0
QUEUE = "arq:queue"


async def fail(redis: ArqRedis, now: int, job: str = "j", **failure: object) -> str:
    _, state = await breakers.failed(redis, HOST, job, now, Failure(**failure), LIMITS)  # type: ignore[arg-type]
    return state


async def test_five_consecutive_failures_open_it_and_a_success_resets_the_count(
    redis: ArqRedis,
) -> None:
    for _ in range(4):
        assert await fail(redis, T0) == "closed"
    assert await breakers.succeeded(redis, HOST, [QUEUE], T0) == "none"  # reset, not a close
    assert await redis.exists(keys.breaker(HOST)) == 0  # nothing left to remember
    for _ in range(4):
        assert await fail(redis, T0) == "closed"
    assert (await breakers.admit(redis, HOST, "x", T0, LEASE, 60)).failures == 4
    assert await fail(redis, T0) == "open"
    (breaker,) = await breakers.tracked(redis)
    assert (breaker.state, breaker.failures, breaker.opened_at) == ("open", 5, T0)
    assert breaker.next_probe == T0 + 30_000


async def test_an_announced_outage_opens_it_at_once_until_the_longer_wait(
    redis: ArqRedis,
) -> None:
    assert await fail(redis, T0, retry_after=120.0, unavailable=True) == "open"
    (breaker,) = await breakers.tracked(redis)
    assert breaker.next_probe == T0 + 120_000  # Retry-After beats the 30 s cool-down
    # a Retry-After without "unavailable" (a 500 that sent one) is just a failure
    await breakers.close(redis, HOST, [QUEUE], T0)
    assert await fail(redis, T0, retry_after=120.0) == "closed"


async def test_a_held_job_waits_unstarted_and_gets_its_try_back(redis: ArqRedis) -> None:
    await fail(redis, T0, unavailable=True)
    await redis.set(retry_key_prefix + "held", 1)  # the claim counted a try
    verdict = await breakers.admit(redis, HOST, "held", T0 + 10_000, LEASE, 60)
    assert verdict.wait == 20.0
    assert not verdict.probe
    assert await redis.get(retry_key_prefix + "held") == b"0"
    waiting = await redis.hget(keys.job_meta("held"), "waiting_for")  # type: ignore[misc]
    assert waiting == b"webhook host hooks.example.com (circuit breaker open)"
    assert 0 < await redis.ttl(keys.job_meta("held")) <= 60


async def test_exactly_one_job_is_let_through_as_the_probe(redis: ArqRedis) -> None:
    await fail(redis, T0, unavailable=True)
    due = T0 + 30_000
    verdicts = await asyncio.gather(
        *(breakers.admit(redis, HOST, f"job{i}", due, LEASE, 60) for i in range(20))
    )
    probes = [v for v in verdicts if v.probe]
    assert len(probes) == 1
    assert all(v.wait is not None and 0 < v.wait <= 30 for v in verdicts if not v.probe)
    (breaker,) = await breakers.tracked(redis)
    assert breaker.state == "half_open"


async def test_a_failed_probe_doubles_the_cool_down_up_to_the_cap(redis: ArqRedis) -> None:
    await fail(redis, T0, unavailable=True)
    now, expected = T0, [60_000, 100_000, 100_000]  # 30 s doubled, then the cap
    for cooldown in expected:
        (breaker,) = await breakers.tracked(redis)
        assert breaker.next_probe is not None
        now = breaker.next_probe
        probe = await breakers.admit(redis, HOST, "probe", now, LEASE, 60)
        assert probe.probe
        # a job admitted before the breaker opened fails meanwhile: no reopening for it
        assert await fail(redis, now, job="late") == "half_open"
        assert await fail(redis, now, job="probe") == "open"
        (breaker,) = await breakers.tracked(redis)
        assert breaker.next_probe == now + cooldown
        assert breaker.opened_at == T0  # "since when": the outage's start


async def test_a_successful_probe_closes_it(redis: ArqRedis) -> None:
    await fail(redis, T0, unavailable=True)
    assert (await breakers.admit(redis, HOST, "p", T0 + 30_000, LEASE, 60)).probe
    assert await breakers.succeeded(redis, HOST, [QUEUE], T0) == "closed"
    assert await breakers.tracked(redis) == []
    assert await redis.exists(keys.breaker(HOST), keys.breakers()) == 0


async def test_a_lost_probe_is_replaced_after_its_lease_and_a_released_one_at_once(
    redis: ArqRedis,
) -> None:
    await fail(redis, T0, unavailable=True)
    due = T0 + 30_000
    assert (await breakers.admit(redis, HOST, "dies", due, LEASE, 60)).probe
    assert (await breakers.admit(redis, HOST, "b", due + 9_000, LEASE, 60)).wait is not None
    # the same job coming back (its worker died, arq re-runs it) is still the probe
    assert (await breakers.admit(redis, HOST, "dies", due + 9_000, LEASE, 60)).probe
    assert (await breakers.admit(redis, HOST, "b", due + 10_001 + 9_000, LEASE, 60)).probe
    await breakers.released(redis, HOST, "b")  # cancelled, or failed before reaching it
    assert (await breakers.admit(redis, HOST, "c", due + 19_500, LEASE, 60)).probe


async def test_a_success_while_open_does_not_close_it(redis: ArqRedis) -> None:
    await fail(redis, T0, unavailable=True)
    assert await breakers.succeeded(redis, HOST, [QUEUE], T0) == "none"
    assert [b.state for b in await breakers.tracked(redis)] == ["open"]


async def test_close_now_forgets_it(redis: ArqRedis) -> None:
    assert not await breakers.close(redis, HOST, [QUEUE], T0)  # nothing open: nothing done
    await fail(redis, T0, unavailable=True)
    assert await breakers.close(redis, HOST, [QUEUE], T0)
    assert (await breakers.admit(redis, HOST, "j", T0 + 1, LEASE, 60)).wait is None


async def test_at_most_max_tracked_destinations_and_idle_ones_expire(redis: ArqRedis) -> None:
    hosts = [breakers.webhook_destination(f"h{i}.example.com") for i in range(5)]
    for host in hosts:
        await breakers.failed(redis, host, "j", T0, Failure(unavailable=True), LIMITS)
    assert [b.destination for b in await breakers.tracked(redis)] == hosts[:3]
    assert await redis.exists(*(keys.breaker(host) for host in hosts[3:])) == 0
    # each key expires: an hour after its next probe
    ttl = await redis.pttl(keys.breaker(hosts[0]))
    assert 0 < ttl <= 30_000 + breakers.IDLE_SECONDS * 1000
    # an hour later the idle ones make room for a new destination
    later = T0 + breakers.IDLE_SECONDS * 1000 + 1
    await breakers.failed(redis, hosts[4], "j", later, Failure(unavailable=True), LIMITS)
    assert await redis.zrange(keys.breakers(), 0, -1) == [hosts[4].encode()]


async def test_closing_makes_the_jobs_it_held_due_at_once(redis: ArqRedis) -> None:
    await fail(redis, T0, retry_after=3600.0, unavailable=True)
    high = f"{QUEUE}:high"  # a held job goes back to its own priority's queue key
    for job, key in (("a", QUEUE), ("b", QUEUE), ("c", high)):
        assert (await breakers.admit(redis, HOST, job, T0 + 1, LEASE, 60)).wait
        await redis.zadd(key, {job: T0 + 3_600_000})  # as the job loop postpones it
    await redis.zadd(QUEUE, {"other": T0 + 3_600_000})
    assert await breakers.close(redis, HOST, [QUEUE, high], T0 + 5)
    assert await redis.zrange(QUEUE, 0, -1, withscores=True) == [
        (b"a", T0 + 5),
        (b"b", T0 + 5),
        (b"other", T0 + 3_600_000),
    ]
    assert await redis.zrange(high, 0, -1, withscores=True) == [(b"c", T0 + 5)]
    assert await redis.exists(keys.breaker_waiting(HOST)) == 0


def _raised(exc: BaseException, cause: BaseException) -> BaseException:
    """``exc`` as raised ``from cause``, as the tracking wrapper raises arq's Retry."""
    try:
        raise exc from cause
    except BaseException as raised:
        return raised


def test_what_counts_against_a_destination() -> None:
    down = TransientError("webhook answered 503", retry_after=5.0, unavailable=True)
    assert transient_cause(_raised(Retry(defer=1), down)) is down
    gave_up = _raised(PermanentError("gave up after 5 attempts"), down)
    assert transient_cause(gave_up) is down  # out of tries: still the destination's failure
    lock = TransientError("another job is sending this", destination_fault=False)
    assert transient_cause(_raised(Retry(defer=1), lock)) is None
    database = _raised(
        TransientError("the users database is unavailable"), DatabaseUnavailableError()
    )
    assert transient_cause(_raised(Retry(defer=1), database)) is None
    assert transient_cause(PermanentError("webhook answered 404: not retried")) is None
