"""The garbage collector set for a long-running service process, once start-up is done.

CPython collects its youngest generation every 700 net allocations of container objects, and
every collection of an older generation walks every object that start-up left behind (modules,
pydantic's schemas, the job registry): tens of thousands of objects that live as long as the
process. A job allocates a few hundred containers (its context, futures, log records), so
the worker ran a young collection every few jobs and a full one every few hundred.

``bench/micro.py --jobs 4000 --loop uvloop``, 4 interleaved runs each, CPU per no-op job:
about 140 us as CPython sets it; 115 us with start-up's objects frozen (``gc.freeze``); 108 us
frozen and with a young threshold of 10,000 (106 at 50,000, 115 at 2,000). Cycles are still
collected, only in larger batches: at most 10,000 young containers wait for it.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000  # allocations between two collections of the youngest generation


def tune_gc() -> None:
    """Freeze what start-up built, so no collection walks it again, and collect the young
    generation less often. Called by the worker's and the web server's entry points only: a
    process that builds and drops apps and workers by the dozen (the tests) must not freeze
    what it will drop, as frozen objects are never collected."""
    gc.collect()  # start-up's own garbage is not frozen with the rest
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
