"""Where a job's CPU time goes: py-spy's samples of a ``bench.micro`` drain, split by part.

``python -m bench.where PROFILE [--cpu-us US]`` reads py-spy's raw (collapsed) output of a worker
draining N no-op jobs, e.g.::

    python -m bench.micro --jobs 20000 --loop uvloop --pause 2 &  # prints its pid
    py-spy record --pid PID -r 1000 -f raw -o profile.txt
    python -m bench.where profile.txt --cpu-us 280  # bench.micro's CPU per job, unprofiled

and prints, per part of a job's life (claim, attempt start, job code, attempt end, metrics,
log lines, live-event publishing, result write, the shared Redis round trips, the event loop),
its share of the samples and, given the process's CPU per job from bench.micro, its CPU
microseconds per job. Each sample goes to the deepest product frame on its stack, so a log
call made by the observation wrapper counts as a log line and the Redis client's work inside
the claim counts as the claim. Samples from queueing the jobs and from start-up are left out.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

# (part, a substring of a frame "function (file:line)") in no particular order: the deepest
# frame on a stack that matches any of these names the part.
MARKERS: tuple[tuple[str, str], ...] = (
    ("claim", "(service/engine/claim.py"),
    ("claim", "_claim (service/engine/loop.py"),
    ("claim", "_take_jobs (service/engine/loop.py"),
    ("claim", "wait_for_jobs (service/engine/wakeup.py"),
    ("engine per job", "_run (service/engine/loop.py"),
    ("engine per job", "_start (service/engine/loop.py"),
    ("engine per job", "deserialize"),
    ("result write", "finish_job (service/engine/loop.py"),
    ("result write", "(service/engine/finish.py"),
    ("result write", "serialize_result"),
    ("attempt start", "_start (service/worker/tracking.py"),
    ("attempt start", "_started (service/worker/tracking.py"),
    ("attempt start", "submit_start (service/records/attempt_scripts.py"),
    ("attempt start", "submit (service/store/scripts.py"),
    ("attempt end", "_finish (service/worker/tracking.py"),
    ("attempt end", "_close (service/worker/tracking.py"),
    ("attempt end", "end_call (service/records/attempt_scripts.py"),
    ("attempt end", "ended (service/records/tallies.py"),
    ("tracking wrapper", "run (service/worker/tracking.py"),
    ("observation wrapper", "run (service/worker/observe.py"),
    ("job code", "(jobs/"),
    ("metrics", "(prometheus_client/"),
    ("log lines", "(logging/"),
    ("log lines", "(service/observability/logs.py"),
    ("log lines", "(service/observability/masking.py"),
    ("live-event publish", "encode (service/records/events.py"),
    ("live-event publish", "(service/records/listeners.py"),
    ("redis round trips (shared batches)", "(service/store/autopipeline.py"),
    ("redis round trips (shared batches)", "(service/store/batcher.py"),
    ("graph tallies (once a second)", "(service/records/tallies.py"),
    ("health check", "record_health (service/engine/loop.py"),
    ("health check", "heart_beat"),
)
# parts that a job's own code may call: inside the job they count as the job's code
JOB_OWN = {"log lines", "metrics", "live-event publish"}
EVENT_LOOP = "Runner.run (asyncio/runners.py"  # on every stack of the event loop's thread
LEFT_OUT = ("enqueue (service/queue/enqueue.py", "_find_and_load", "open_pool", "flushall")


def part_of(frames: list[str]) -> str | None:
    """The part a stack (root first) belongs to, or None for one that is left out: start-up,
    queueing, and the other threads (idle thread pools, which py-spy may not see as idle)."""
    if not any(EVENT_LOOP in frame for frame in frames[:8]):
        return None
    if any(marker in frame for frame in frames for marker in LEFT_OUT):
        return None
    part, in_job = "event loop and the rest", False
    for frame in frames:
        for name, marker in MARKERS:
            if marker in frame:
                if name == "job code":
                    in_job = True
                if not (in_job and name in JOB_OWN):
                    part = name
                break
    return part


def tally(lines: Iterable[str]) -> Counter[str]:
    parts: Counter[str] = Counter()
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        part = part_of(stack.split(";"))
        if part is not None:
            parts[part] += int(count)
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--cpu-us", type=float, default=0, help="bench.micro's CPU per job")
    args = parser.parse_args()
    parts = tally(args.profile.read_text().splitlines())
    total = sum(parts.values())
    print(f"{total} samples")
    for part, count in parts.most_common():
        share = count / total
        cpu = f"{share * args.cpu_us:7.1f} us" if args.cpu_us else ""
        print(f"{part:38s} {share:6.1%} {cpu}")


if __name__ == "__main__":
    main()
