"""Consecutive calls of one script in an auto-pipelined batch, sent as one call.

The jobs of a claimed batch start in the same loop tick and finish close together, so a batch
(service.store.autopipeline) often holds a run of calls to one script: an attempt start per
job, a finish per job. Each call costs the worker about as much CPU to pack and parse as its
whole work costs Redis. A run of two or more consecutive calls goes instead as one call of a
wrapper script that runs the script once per call, each with its own KEYS and ARGV, and
replies with the list of their replies, which the batch hands back one per caller.

Nothing moves: only calls next to each other in the batch merge, so every command still runs
after the ones sent before it. Each call runs under ``pcall``: a call that fails gets its own
error and the calls after it still run, as separate calls would. The wrapper goes as EVAL with
its source (Redis caches it by hash), so a Redis that has forgotten the scripts runs it anyway.
Only scripts registered here (service.store.scripts registers every one of ours) are merged.
"""

from __future__ import annotations

import functools
from typing import Any

CommandStack = list[tuple[tuple[Any, ...], Any]]  # (command and arguments, options)

_SOURCES: dict[str, str] = {}  # sha1 -> source of the scripts that may be merged
_KNOWN: set[str] = set()  # their sources

_WRAPPER = """local calls = tonumber(ARGV[1])
local function body(KEYS, ARGV)
%s
end
local results, k, a = {}, 0, 1 + 2 * calls
for i = 1, calls do
  local nkeys, nargs = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local keys, args = {}, {}
  for j = 1, nkeys do keys[j] = KEYS[k + j] end
  for j = 1, nargs do args[j] = ARGV[a + j] end
  k, a = k + nkeys, a + nargs
  local ok, reply = pcall(body, keys, args)
  if not ok then
    if type(reply) ~= 'table' then reply = redis.error_reply(tostring(reply)) end
  elseif reply == nil then
    reply = false
  end
  results[i] = reply
end
return results
"""


def register(sha: str, source: str) -> None:
    """Let calls of this script (by EVALSHA ``sha`` or EVAL ``source``) be merged."""
    _SOURCES[sha] = source
    _KNOWN.add(source)


@functools.cache
def _wrapper(source: str) -> str:
    return _WRAPPER % source


def _script_of(command: tuple[Any, ...]) -> str | None:
    """The source of the registered script ``command`` calls, or None."""
    name = command[0]
    if name == "EVALSHA":
        return _SOURCES.get(command[1])
    if name == "EVAL" and command[1] in _KNOWN:
        return str(command[1])
    return None


def merge(stack: CommandStack) -> tuple[CommandStack, list[int]]:
    """``stack`` with each run of consecutive calls of one registered script made one call;
    and, per command sent, how many of ``stack``'s commands it stands for (see :func:`split`)."""
    scripts = [_script_of(command) for command, _ in stack]  # each command looked at once
    merged: CommandStack = []
    sizes: list[int] = []
    i = 0
    while i < len(stack):
        source, end = scripts[i], i + 1
        if source is not None:
            while end < len(stack) and scripts[end] == source:
                end += 1
        if source is None or end - i < 2:
            merged.append(stack[i])
            sizes.append(1)
        else:
            merged.append(((*_merged_call(source, stack[i:end]),), {}))
            sizes.append(end - i)
        i = end
    return merged, sizes


def _merged_call(source: str, run: CommandStack) -> list[Any]:
    counts: list[Any] = [len(run)]
    all_keys: list[Any] = []
    all_args: list[Any] = []
    for command, _ in run:
        nkeys = int(command[2])
        counts += [nkeys, len(command) - 3 - nkeys]
        all_keys += command[3 : 3 + nkeys]
        all_args += command[3 + nkeys :]
    return ["EVAL", _wrapper(source), len(all_keys), *all_keys, *counts, *all_args]


def split(replies: list[Any], sizes: list[int]) -> list[Any]:
    """The replies to the commands :func:`merge` was given, from those to what it sent: a
    merged call's list of replies spread out, or its one error (the wrapper itself refused)
    given to each of its calls."""
    if len(sizes) == len(replies) and all(size == 1 for size in sizes):
        return replies
    out: list[Any] = []
    for reply, size in zip(replies, sizes, strict=False):
        if size == 1:
            out.append(reply)
        elif isinstance(reply, list) and len(reply) == size:
            out.extend(reply)
        else:
            out.extend([reply] * size)
    out.extend(replies[len(sizes) :])  # anything sent after (WAIT)
    return out
