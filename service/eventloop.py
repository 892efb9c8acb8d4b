"""uvloop for the web app and the worker, when it is installed (it is not on Windows).

Measured with ``bench/micro.py`` and wrk, interleaved: about 10% less CPU per no-op job in
the worker and per ``POST /send-email`` in the web app than asyncio's own loop.
"""

from __future__ import annotations

import asyncio
import importlib.util


def uvloop_available() -> bool:
    """Whether uvloop can be used here, without touching the event loop policy."""
    return importlib.util.find_spec("uvloop") is not None


def install_uvloop() -> bool:
    """Make new event loops uvloop's; False (and asyncio's loop) when it is not available."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
