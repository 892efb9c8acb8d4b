"""What the service stores beside arq's keys, written by the worker and read by the API and
the dashboard: a job's status document, its attempt history, the failed-jobs list, the day's
counters, live events and progress, and which workers are alive.

May import: ``engine.arq_api`` (arq's key names and job format), ``store``, ``observability``.
"""
