"""structlog set-up: readable console lines on a TTY, JSON lines otherwise."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import structlog

LogFormat = Literal["auto", "console", "json"]


def configure_logging(fmt: LogFormat = "auto", level: str = "info", *, lean: bool = False) -> None:
    """Route every event through one renderer chosen for where stderr goes.

    `lean` (a process that draws no tables: the daemon, its head start): when the
    lines are JSON, rich is not imported at all. structlog imports it only to draw
    tracebacks on a terminal, and it costs 50-80 ms of a start.
    """
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    if lean and not use_console and "structlog" not in sys.modules:
        sys.modules.setdefault("rich", None)  # type: ignore[arg-type]
    import structlog

    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=True)
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # libraries log through the standard library (watchdog, asyncio): the same lines
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not isinstance(h, _ToStructlog)]
    root.addHandler(_ToStructlog())
    root.setLevel(max(logging.WARNING, logging.getLevelNamesMapping()[level.upper()]))


class _ToStructlog(logging.Handler):
    """A library's log record as one of our events (`library.log`), so stderr holds
    nothing but our lines: JSON lines when it is not a terminal."""

    def emit(self, record: logging.LogRecord) -> None:
        import structlog

        try:
            message = record.getMessage()
        except Exception:  # a library's bad format string must not break logging
            message = str(record.msg)
        structlog.get_logger(record.name).log(
            record.levelno, "library.log", logger=record.name, message=message
        )
