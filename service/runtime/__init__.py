"""The job-runtime API: everything a job module may import from ``service``.

May import: ``records``, ``store``, ``observability``.
"""
