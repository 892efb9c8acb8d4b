"""Storage plumbing every other layer stands on: Redis clients and their retry policies,
auto-pipelining, Lua scripts run by hash, the key names we add beside arq's, the JSON job
format, the users database and blocking file helpers.

May import: nothing else of ``service`` (it is the bottom layer).
"""
