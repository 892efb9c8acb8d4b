"""The job-search index: which sorted sets a job is written to when it is queued.

Search (``GET /jobs``, the dashboard's search page) must never scan the keyspace, so every
job the API queues is added, in the enqueue script's own call, to a few sorted sets scored by
its enqueue time: one of every job, one per function, one per business key its declaration
names (``Job.search_keys``: a recipient address, ``user:<id>``, a webhook host). Each set is
trimmed in that same call, by time (entries older than results and failed jobs are kept) and
by count (``SEARCH_INDEX_MAX_JOBS``), and expires as a whole once no job has been added to it
for that long: the index is bounded and goes away with the jobs it points at.

A member is ``"<job id> <function>"``: a result row needs the function, and reading it from
the member costs nothing (a job id never holds a space).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from service.store import keys
from settings import Settings

SEPARATOR = " "
MAX_KEY_LENGTH = 320  # an address's longest form (64 + 1 + 255), with room to spare


@dataclass(frozen=True, slots=True)
class SearchIndex:
    """How long and how many jobs each index set keeps."""

    keep_ms: int
    max_jobs: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SearchIndex:
        """Kept as long as a job can still be looked at: its result (JOB_RESULT_TTL) or its
        failed-jobs entry (DEAD_LETTER_MAX_AGE), whichever lasts longer."""
        seconds = max(settings.job_result_ttl, settings.dead_letter_max_age)
        return cls(keep_ms=seconds * 1000, max_jobs=settings.search_index_max_jobs)

    def sets_for(self, function: str, business_keys: Iterable[str]) -> list[str]:
        """The sorted sets a job of ``function`` with these business keys is added to."""
        sets = [keys.search_index(), keys.search_index("fn", function)]
        sets += [keys.search_index("key", key) for key in dict.fromkeys(business_keys)]
        return sets


def normalize_key(raw: str) -> str:
    """A business key as it is stored and looked up: trimmed and lower-cased, since
    addresses and host names do not depend on case; '' when there is nothing to index."""
    key = raw.strip().lower()
    return key if key.isprintable() and len(key) <= MAX_KEY_LENGTH else ""


def member(job_id: str, function: str) -> str:
    """The index member of one job."""
    return f"{job_id}{SEPARATOR}{function}"


def split_member(raw: bytes | str) -> tuple[str, str]:
    """(job id, function) of an index member."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    job_id, _, function = text.partition(SEPARATOR)
    return job_id, function


# The enqueue script's lines that write the index, for a script whose KEYS from
# ``first_key`` on are the index sets and whose ARGV from ``first_arg`` on are: member, score
# (enqueue time, ms), oldest score kept, count kept, ms the set lives after this addition.
def index_lines(first_key: int, first_arg: int) -> str:
    """Lua: add the job to every index set, trimmed by time and count, with its expiry."""
    a = first_arg
    return f"""
for i = {first_key}, #KEYS do
  redis.call('ZADD', KEYS[i], ARGV[{a + 1}], ARGV[{a}])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. ARGV[{a + 2}])
  redis.call('ZREMRANGEBYRANK', KEYS[i], 0, -1 - tonumber(ARGV[{a + 3}]))
  redis.call('PEXPIRE', KEYS[i], ARGV[{a + 4}])
end
"""
