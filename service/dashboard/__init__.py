"""Read models for the dashboard's pages: the overview, cron schedules, one job's page, the
dev mail sink's messages, and job arguments with their secrets masked.

May import: ``runtime`` (job declarations), ``records``, ``engine.arq_api``, ``store``,
``observability``.
"""
