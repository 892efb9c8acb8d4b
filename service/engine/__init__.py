"""The job loop: arq's Worker taking jobs in batches, waking on enqueue, finishing in batches.

This package is the only code that touches arq's private or undocumented names, and it does
so through one module, ``service.engine.arq_api``, which checks arq's version and every such
name at import. Other layers read arq's key names and job format from that module too.

May import: ``store``, ``observability``.
"""
