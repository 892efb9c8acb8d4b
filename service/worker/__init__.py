"""What ``arq service.WorkerSettings`` builds: the worker process's composition root.

It reads the job registry (``jobs.registry``), wraps every job in attempt tracking and
observation, opens the resources jobs share (HTTP session, thread pool, database, SMTP
pool) and hands all of it to the engine. It is the only part of ``service`` that imports
``jobs``.

May import: every other layer of ``service`` but ``dev``, and ``jobs``.
"""
