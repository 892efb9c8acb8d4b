"""The jobs: one module each (a coroutine and its declaration), listed in jobs/registry.py.

A job imports from ``service`` only its job-runtime API, ``service.runtime``."""
