"""What the API does to jobs: queue them (waking a worker), cancel them, run failed ones
again, and remember clients' ``Idempotency-Key`` headers.

May import: ``runtime`` (job declarations), ``records``, ``engine.arq_api``, ``store``,
``observability``.
"""
