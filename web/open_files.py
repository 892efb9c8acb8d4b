"""The web process's open-files limit, raised to what its own caps need.

Every live stream holds a socket and every Redis connection of the web pool a descriptor, so
a process may hold about LIVE_STREAMS_PER_PROCESS + WEB_REDIS_MAX_CONNECTIONS of them on
purpose, plus its other requests, the database and files. A process at its open-files limit
cannot accept a connection at all, so ``/health`` answers with resets and the stream cap's
``429`` never goes out: the caps only hold if the limit is above them. systemd and most shells
start a process with a soft limit of 1,024 (and a hard one far above), which the default caps
(1,000 streams, 100 connections) already pass. So ``python -m web`` raises its soft limit to
what the caps need, before gunicorn forks (its processes inherit it); when the hard limit is
lower still, it raises the soft one as far as allowed and says which settings to lower.
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
    """Raise RLIMIT_NOFILE's soft limit to ``needed(settings)``, within the hard limit."""
    need = needed(settings)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if target > soft:
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
