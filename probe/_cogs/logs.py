"""structlog set-up: JSON lines in production, a readable console on a terminal.

Context (target, job id) is bound with contextvars per probe, so every line of a probe carries
it without being passed around.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog
from aiohttp.http_exceptions import HttpProcessingError

LogFormat = Literal["json", "console", "auto"]


def configure(level: str = "info", fmt: LogFormat = "json") -> None:
    """Configure structlog and the stdlib root logger (aiohttp logs through it) to stderr.

    Called at start-up, and again by a reload that changes ``logging``: it replaces what it set.
    """
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            # format_exc_info: a library's traceback (aiohttp's "Unhandled exception") would
            # otherwise render as the reprs of the exc_info tuple, without the trace.
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    if numeric > logging.DEBUG:
        handler.addFilter(_drop_malformed_request_errors)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # aiohttp's access log would add a line per scrape; keep library chatter at warning.
    root.setLevel(max(numeric, logging.WARNING))


def _drop_malformed_request_errors(record: logging.LogRecord) -> bool:
    """aiohttp logs every request it cannot parse at error level with a traceback; a port
    scanner would fill the log. The client got its 400; keep these for debug level only."""
    if record.name == "aiohttp.server" and record.exc_info:
        return not isinstance(record.exc_info[1], HttpProcessingError)
    return True


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    # A lazy proxy: the logger is built on first use, after configure() ran. (`.bind()` would
    # build it now, from structlog's defaults; `logger` is wrap_logger's own argument name.)
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(component=name)
    return logger
