"""What operators see of a process: JSON log lines, Prometheus metrics and the worker's
``/metrics`` server, and the request id that follows a request into the jobs it queues.

May import: nothing else of ``service`` (a bottom layer, beside ``store``).
"""
