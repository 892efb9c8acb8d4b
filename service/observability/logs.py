"""Log set-up shared by the web app and the worker: one JSON object per line, or plain text.

A small formatter of our own rather than python-json-logger: all it has to do is put the
record's standard fields, its ``extra=`` fields and the context's fields (request id, job id)
into one JSON encoding (service.observability.json_text: a worker writes a line per attempt),
and owning those ~40 lines keeps the field names ours.

Every line, its traceback and its text fields go through the one masking rule
(service.observability.masking): a webhook URL's ``?token=`` or ``user:pass@`` quoted by an
exception, ours or a library's, never reaches the log.
"""

from __future__ import annotations

import itertools
import logging
import logging.config
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

from service.observability.json_text import encoder
from service.observability.masking import mask_text
from service.observability.origin import log_fields
from settings import Settings

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


# LogRecord.__init__ sets its attributes first, in this order, and ``extra=`` comes after them:
# a line looks only past them for its fields (about twenty fewer names to test per line)
_INITIAL = list(vars(logging.LogRecord("", 0, "", 0, "", (), None)))


def _past_initial(record: logging.LogRecord) -> Iterator[tuple[str, Any]]:
    """The record's attributes from where ``extra=``'s may start."""
    attributes = vars(record)
    items = iter(attributes.items())
    last = next(itertools.islice(items, len(_INITIAL) - 1, None), None)
    if last is None or last[0] != _INITIAL[-1]:  # not laid out by LogRecord.__init__: look at all
        items = iter(attributes.items())
    return items


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a line carries beyond its message: the context's, then ``extra=``'s."""
    fields: dict[str, Any] = dict(log_fields.get())
    for name, value in _past_initial(record):
        if name not in _STANDARD_ATTRIBUTES and name[:1] != "_":
            fields[name] = value
    return fields


# compact, non-ASCII kept, anything else written as its str()
_ENCODE = encoder(default=str)


class _Clock:
    """``created`` as ``datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")``
    writes it, formatting the date and time once a second instead of once a line (every request
    logs a line)."""

    def __init__(self) -> None:
        self._second = 0
        self._prefix = ""

    def iso(self, created: float) -> str:
        second = math.floor(created)
        micro = round((created - second) * 1_000_000)  # as datetime rounds: half to even
        if micro >= 1_000_000:
            second, micro = second + 1, micro - 1_000_000
        if second != self._second or not self._prefix:
            self._prefix = datetime.fromtimestamp(second, tz=UTC).isoformat()[:-6]
            self._second = second
        return f"{self._prefix}.{micro // 1000:03d}+00:00"


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...fields}`` on one line."""

    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self._clock.iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,  # several web processes (WEB_PROCESSES) share one log
            "message": mask_text(record.getMessage()),
        }
        # record_fields' fields, written straight into the line: every job writes a line or two
        for name, value in log_fields.get().items():
            line[name] = mask_text(value) if isinstance(value, str) else value
        for name, value in _past_initial(record):
            if name not in _STANDARD_ATTRIBUTES and name[:1] != "_":
                line[name] = mask_text(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exception"] = mask_text(self.formatException(record.exc_info))
        return _ENCODE(line)


class TextFormatter(logging.Formatter):
    """The usual human line, with the fields appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = record_fields(record)
        if not fields:
            return mask_text(text)
        head, newline, tail = text.partition("\n")  # keep a traceback below the fields
        pairs = " ".join(f"{key}={value}" for key, value in fields.items())
        return mask_text(f"{head} {pairs}{newline}{tail}")


class LineHandler(logging.StreamHandler[TextIO]):
    """A ``StreamHandler`` that does not flush after each line a stream flushes by itself: a
    line-buffered one, as stderr always is, writes at every newline, and the stdlib handler's
    own flush after it (its lock taken again, a call that finds nothing to write) cost about
    5% of a line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = self.stream
            stream.write(self.format(record) + self.terminator)
            if not getattr(stream, "line_buffering", False):
                self.flush()
        except RecursionError:  # as the stdlib handler does
            raise
        except Exception:
            self.handleError(record)


def logging_config(settings: Settings) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict: every logger, arq's included, through one stderr
    handler in LOG_FORMAT at LOG_LEVEL. arq's CLI takes it as ``--custom-log-dict service.LOGGING``
    so even its first lines come out in this format."""
    formatter = JsonFormatter if settings.log_format == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"jobservice": {"()": formatter}},
        "handlers": {"stderr": {"()": LineHandler, "formatter": "jobservice"}},
        "root": {"handlers": ["stderr"], "level": settings.log_level},
        # no handler of its own: arq's lines go through the root's, once
        "loggers": {
            "arq": {"handlers": [], "level": "NOTSET", "propagate": True},
        },
    }


def configure_logging(settings: Settings) -> None:
    """Apply :func:`logging_config`; the process entry points call it, tests never do.

    Applying it again replaces the handlers, so a worker started without the
    ``--custom-log-dict`` flag switches arq's own handler off at start-up.
    """
    logging.config.dictConfig(logging_config(settings))
    # No line shows the caller's file, function or line, so skip finding them on every call
    # (the logging HOWTO's "Optimization" section): ~10% of a log call.
    logging._srcfile = None
    # nor the thread's or the process's name, which no line shows either (its pid it does)
    logging.logThreads = False
    logging.logMultiprocessing = False
