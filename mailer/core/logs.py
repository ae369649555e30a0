"""Logs: one line per event, plain text (the default) or JSON (``NEWSLETTER_LOG_FORMAT``),
at ``NEWSLETTER_LOG_LEVEL``; configured once per process by whatever runs it: the CLI
(``mailer.cli.main``: a one-shot command prints its outcome and logs only warnings
and errors; ``newsletter web`` and ``inbound serve|poll`` log as services do), the web app (``mailer.web.app``, uvicorn's own loggers too) and
Celery workers and beat (``mailer.celeryapp``, through Celery's ``setup_logging`` signal,
so Celery leaves the root logger alone).

An event is ``event(log, "message sent", campaign_id=..., delivery_id=...)``: its fields
are top-level keys of the JSON object, or ``key=value`` after the text line. At INFO no
event carries a message body or a full address: ``mask_address`` keeps the first letter
and the domain (``j***@example.com``, enough to see a domain's trouble); the full address
is logged only at DEBUG.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
import time

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
# What every LogRecord has: anything else on a record is an event's field.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
# Loggers that come with handlers of their own and would print a second, differently
# shaped line: their records go to the root handler instead.
OWN_HANDLERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task", "celery.redirected")


def mask_address(address: str) -> str:
    """``jane@example.com`` -> ``j***@example.com``: the domain stays (a receiver's
    trouble shows), the person does not. Not an address at all: ``***``."""
    local, at, domain = (address or "").strip().rpartition("@")
    if not at or not local or not domain:
        return "***"
    return f"{local[0]}***@{domain}"


def event(log: logging.Logger, message: str, /, *, level: int = logging.INFO, **fields) -> None:
    """One event, its fields structured (ids, counts, a masked address; never a body)."""
    if log.isEnabledFor(level):
        log.log(level, message, extra=fields)


class _StampPerSecond:
    """``formatTime`` as logging writes it, with the date and time part formatted once
    per second instead of once per record (a send worker logs thousands of lines a
    second; ``time.strftime`` was a fifth of the cost of each). Formatting runs under the
    handler's lock, one record at a time."""

    _second: int = -1
    _stamp: str = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        if datefmt or self.datefmt:
            return super().formatTime(record, datefmt)  # type: ignore[misc]
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return self.default_msec_format % (self._stamp, record.msecs)


class TextFormatter(_StampPerSecond, logging.Formatter):
    """The plain line, then the event's fields as ``key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join([f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD])
        if extra:
            line = f"{line} {extra}"
        # One event, one line: a traceback's lines are joined too.
        return " ".join(line.split("\n")) if "\n" in line else line


class _Noise(logging.Filter):
    """Drops kombu's warning that a broker URL names no host: ours do not, on purpose
    (``filesystem://``, the embedded default), and it came at every connection."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "kombu.connection" and isinstance(record.msg, str)
                    and record.msg.startswith("No hostname was supplied"))


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        class _Json(_StampPerSecond, JsonFormatter):
            pass

        # Tracebacks go into the "exc_info" string: still one JSON object per line.
        return _Json(JSON_FIELDS, rename_fields={"asctime": "time", "levelname": "level", "name": "logger"})
    return TextFormatter(TEXT_FORMAT)


def configure(*, fmt: str = "text", level: str = "INFO", stream=None) -> None:
    """Send every log record of this process, one line each, to ``stream`` (stderr).
    Calling it again replaces what the last call set up."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_newsletter", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(fmt))
    handler.addFilter(_Noise())
    handler._newsletter = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # No line of ours shows the caller's file and line, the thread or the process, so
    # records do not look them up (the logging HOWTO's "Optimization"): a fifth of the
    # cost of each of a send worker's thousands of lines a second.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    for name in OWN_HANDLERS:
        own = logging.getLogger(name)
        own.handlers.clear()
        own.propagate = True
    # Python warnings (a deprecation, Celery's root warning) become log lines too.
    logging.captureWarnings(True)


def write_json_line(message: str, *, logger: str, level: str = "INFO", stream=None) -> None:
    """One JSON log line written straight to the file descriptor, no logging lock: for
    what a library prints from a signal handler, where taking a lock could deadlock."""
    record = {"time": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3], "level": level,
              "logger": logger, "message": " ".join(str(message).split())}
    try:
        os.write((stream or sys.__stderr__).fileno(), (json.dumps(record) + "\n").encode())
    except (OSError, AttributeError, ValueError):
        pass  # nowhere to write: the process is going away anyway


def configure_from(settings, *, floor: str = "NOTSET") -> None:
    """``configure`` with ``NEWSLETTER_LOG_FORMAT`` and ``NEWSLETTER_LOG_LEVEL``, or
    ``floor`` when that is higher (the CLI's one-shot commands: WARNING)."""
    level = max(logging.getLevelNamesMapping()[settings.log_level], logging.getLevelNamesMapping()[floor])
    configure(fmt=settings.log_format, level=logging.getLevelName(level))
