"""The web process's open-files limit, raised from the soft limit to the hard one.

Every connection holds a descriptor: each live stream and each request whose body is still
arriving, and each Redis connection of the web pool. A process at its open-files limit cannot
accept a connection at all, so ``/health`` answers with resets and the caps' ``429`` never
goes out: the caps only hold below the limit. systemd and most shells start a process with a
soft limit of 1,024 (the hard one far above: 524,288 under systemd), which the default stream
cap and Redis pool already pass (1,000 + 100), and which one token alone could fill with slow
bodies: at RATE_LIMIT_PER_TOKEN's 100 requests a second, each taking REQUEST_BODY_TIMEOUT's
30 s, about 3,000 at once. So ``python -m web`` raises its soft limit to the hard one (the soft
limit exists for programs using select(), which this one does not), before gunicorn forks: its
processes inherit it. When even the hard limit is below what the caps need, it says which
settings to lower.
"""

from __future__ import annotations

import logging
import resource

from settings import Settings

logger = logging.getLogger("jobservice.web")

HEADROOM = 1024  # descriptors beside streams and the Redis pool: requests, database, files


def needed(settings: Settings) -> int:
    """Open files one web process may need with its caps reached."""
    return settings.live_streams_per_process + settings.web_redis_max_connections + HEADROOM


def raise_open_files_limit(settings: Settings) -> None:
    """Raise RLIMIT_NOFILE's soft limit to the hard one; warn when that is below
    ``needed(settings)``."""
    need = needed(settings)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:  # not on Linux, whose ceiling is fs.nr_open
        target = soft if soft == resource.RLIM_INFINITY else max(soft, need)
    else:
        target = hard
    if target != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < need:
        logger.warning(
            "the open files limit is %d (hard), below the %d that LIVE_STREAMS_PER_PROCESS (%d)"
            " and WEB_REDIS_MAX_CONNECTIONS (%d) need with room for other requests: a process"
            " full of streams could refuse every connection; raise the limit (systemd:"
            " LimitNOFILE=) or lower those settings",
            hard,
            need,
            settings.live_streams_per_process,
            settings.web_redis_max_connections,
        )
