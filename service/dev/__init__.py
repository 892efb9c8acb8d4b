"""Development tools: ``python -m service.dev`` (what `make dev` runs: Redis if none answers,
a mail sink, the web app and the worker) and ``python -m service.dev.mailsink``.

May import: anything; nothing imports it.
"""
