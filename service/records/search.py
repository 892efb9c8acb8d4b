"""Job search: read the search index newest first, keep the jobs that match, with their state.

The most selective index set is read (a business key's, else a function's, else every job's,
see service.records.search_index), a batch at a time, between the two times asked for; each
batch's states are read by one script call, from the same keys the status API reads. A page
stops once it is full or once ``scan_max`` entries were looked at, whichever comes first, and
says where to go on (a cursor: the score and member of the last entry looked at), so a
request's cost is bounded however rare the match. Entries whose job Redis no longer knows
(its result expired before the index entry) are skipped.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from redis.asyncio import Redis

from service.engine.arq_api import (
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from service.records.search_index import split_member
from service.store import keys
from service.store.scripts import LuaScript

BATCH = 200  # index entries read, and states looked up, per round trip
SCAN_MAX = 5000  # index entries one page looks at, at most


class JobState(StrEnum):
    """A job's state in search; the status API's, with a deferred job told from a waiting one."""

    WAITING = "waiting"  # queued, due now: waiting for a worker
    DEFERRED = "deferred"  # queued to run later (run_at, delay)
    RUNNING = "running"
    RETRYING = "retrying"  # an attempt failed transiently; the next one is queued
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """What an operator asks for; every field left out matches everything."""

    function: str | None = None
    states: frozenset[JobState] = frozenset()
    key: str | None = None  # a business key, normalized (search_index.normalize_key)
    prefix: str | None = None  # of the job id
    since_ms: int | None = None  # enqueued at or after
    until_ms: int | None = None  # enqueued at or before

    def index_set(self) -> str:
        """The smallest index set that holds every match."""
        if self.key is not None:
            return keys.search_index("key", self.key)
        if self.function is not None:
            return keys.search_index("fn", self.function)
        return keys.search_index()

    def admits(self, job_id: str, function: str) -> bool:
        """What the entry itself tells: the id's prefix and (from another set) the function."""
        if self.prefix is not None and not job_id.startswith(self.prefix):
            return False
        return self.function is None or function == self.function


class BadCursorError(ValueError):
    """The cursor is not one this service handed out."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page starts: just after this entry, in newest-first order."""

    score: int
    member: str

    def encode(self) -> str:
        raw = json.dumps([self.score, self.member]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            score, entry = json.loads(raw)
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
            raise BadCursorError(text) from None
        if not isinstance(score, int) or not isinstance(entry, str) or len(entry) > 512:
            raise BadCursorError(text)
        return cls(score, entry)


@dataclass(frozen=True, slots=True)
class Found:
    """One matching job."""

    job_id: str
    function: str
    state: JobState
    enqueued_ms: int


@dataclass(frozen=True, slots=True)
class SearchPage:
    jobs: list[Found]
    next: Cursor | None  # None: nothing older is left to look at
    examined: int  # index entries looked at


# Each job's state, as service.records.status derives it, from the same keys.
# KEYS: failed-jobs set, then per job: result, job, in-progress, retry, meta, then the queues.
# ARGV: now ms, how many jobs, then the job ids.
# Returns one state per job ('' when Redis has forgotten it).
_STATES = LuaScript("""
local now = tonumber(ARGV[1])
local jobs = tonumber(ARGV[2])
local first_queue = 2 + jobs * 5
local out = {}
for i = 3, #ARGV do
  local b = 2 + (i - 3) * 5
  local id = ARGV[i]
  local outcome = redis.call('HGET', KEYS[b + 4], 'outcome')
  local state = ''
  if redis.call('EXISTS', KEYS[b]) == 1 then
    if outcome == 'success' then state = 'succeeded'
    elseif outcome == 'cancelled' then state = 'cancelled'
    elseif outcome then state = 'failed'
    else
      local ok, doc = pcall(cjson.decode, redis.call('GET', KEYS[b]))
      state = (ok and type(doc) == 'table' and doc['s'] == true) and 'succeeded' or 'failed'
    end
  elseif redis.call('EXISTS', KEYS[b + 1]) == 1 then
    local attempts = math.max(tonumber(redis.call('GET', KEYS[b + 3]) or '0') or 0,
      tonumber(redis.call('HGET', KEYS[b + 4], 'attempts') or '0') or 0)
    if redis.call('EXISTS', KEYS[b + 2]) == 1 then state = 'running'
    elseif attempts > 0 then state = 'retrying'
    else
      local due = 0
      for q = first_queue, #KEYS do
        local score = redis.call('ZSCORE', KEYS[q], id)
        if score then
          due = tonumber(score)
          break
        end
      end
      state = due > now and 'deferred' or 'waiting'
    end
  elseif outcome == 'success' then state = 'succeeded'
  elseif outcome == 'cancelled' then state = 'cancelled'
  elseif outcome or redis.call('ZSCORE', KEYS[1], id) then state = 'failed'
  end
  out[#out + 1] = state
end
return out
""")


async def job_states(
    redis: Redis, queues: str | Sequence[str], job_ids: list[str]
) -> list[JobState | None]:
    """The state of each job, in one script call; None for a job Redis no longer knows.
    ``queues``: every sorted set a job may wait in (service.engine.queues)."""
    if not job_ids:
        return []
    script_keys = [keys.dead_letters()]
    for job_id in job_ids:
        script_keys += [
            result_key_prefix + job_id,
            job_key_prefix + job_id,
            in_progress_key_prefix + job_id,
            retry_key_prefix + job_id,
            keys.job_meta(job_id),
        ]
    script_keys += [queues] if isinstance(queues, str) else queues
    now = int(time.time() * 1000)
    reply: list[bytes] = await _STATES.run(redis, script_keys, [now, len(job_ids), *job_ids])
    return [JobState(state.decode()) if state else None for state in reply]


async def search(
    redis: Redis,
    queues: str | Sequence[str],
    query: SearchQuery,
    *,
    limit: int,
    cursor: Cursor | None = None,
    scan_max: int = SCAN_MAX,
) -> SearchPage:
    """Up to ``limit`` jobs matching ``query``, newest first, from just after ``cursor``."""
    high: float | str = "+inf" if query.until_ms is None else query.until_ms
    if cursor is not None:
        high = cursor.score if query.until_ms is None else min(cursor.score, query.until_ms)
    low: float | str = "-inf" if query.since_ms is None else query.since_ms
    found: list[Found] = []
    read, last = 0, cursor
    while read < scan_max:
        rows: list[tuple[bytes, float]] = await redis.zrevrangebyscore(
            query.index_set(),
            high,
            low,
            start=read,
            num=min(BATCH, scan_max - read),
            withscores=True,
        )
        if not rows:
            return SearchPage(found, None, read)
        read += len(rows)
        entries = [
            (*split_member(raw), int(score), raw.decode())
            for raw, score in rows
            if not _seen(raw, score, cursor)
        ]
        ids = [job_id for job_id, function, *_ in entries if query.admits(job_id, function)]
        states = dict(zip(ids, await job_states(redis, queues, ids), strict=True))
        for job_id, function, score, raw in entries:
            last = Cursor(score, raw)
            state = states.get(job_id)
            if state is not None and (not query.states or state in query.states):
                found.append(Found(job_id, function, state, score))
                if len(found) == limit:
                    return SearchPage(found, last, read)
    return SearchPage(found, last, read)


def _seen(raw: bytes, score: float, cursor: Cursor | None) -> bool:
    """An entry at or before the cursor: same time, and not after it in newest-first order
    (equal scores come in reverse order of their members)."""
    return cursor is not None and int(score) == cursor.score and raw.decode() >= cursor.member
