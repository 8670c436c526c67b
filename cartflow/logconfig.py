"""structlog for everything: JSON lines in production, readable lines on a terminal.

Standard-library loggers (Django, Celery, gunicorn) go through the same processors, so every line
carries the request id bound by :mod:`cartflow.middleware`. Secrets never reach a log line: the
``redact`` processor masks known secret-looking keys, and tracebacks carry no frame locals (structlog
and rich show them by default: SQL parameters, request bodies, tokens).
"""

from __future__ import annotations

import logging
import logging.config
import sys

import structlog

SECRET_KEYS = {"password", "secret", "authorization", "stripe_secret_key", "token", "client_secret", "api_key"}


def redact(_logger, _name, event_dict):  # noqa: ANN001 - structlog processor signature
    for key in list(event_dict):
        if key.lower() in SECRET_KEYS:
            event_dict[key] = "[redacted]"
    return event_dict


def _shared_processors() -> list:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]


def _pretty(fmt: str) -> bool:
    return fmt == "console" or (fmt == "auto" and sys.stderr.isatty())


# Tracebacks as structured fields (JSON) or as text (console): frames, files and lines, never locals.
_json_tracebacks = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


def _console_renderer() -> structlog.dev.ConsoleRenderer:
    if structlog.dev.rich is not None:
        formatter = structlog.dev.RichTracebackFormatter(show_locals=False)
        return structlog.dev.ConsoleRenderer(exception_formatter=formatter)
    return structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)


def logging_dict(*, level: str = "INFO", fmt: str = "auto") -> dict:
    """The ``logging.config.dictConfig`` that renders every stdlib record through structlog.

    Also used as gunicorn's ``logconfig_dict`` (cartflow/gunicorn_conf.py) so its lines look the same.
    """
    pretty = _pretty(fmt)
    shared = _shared_processors()
    renderer = _console_renderer() if pretty else structlog.processors.JSONRenderer()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structlog": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    # Tracebacks stay in the log as a structured field, never in a response.
                    _json_tracebacks if not pretty else structlog.dev.set_exc_info,
                    renderer,
                ],
                "foreign_pre_chain": shared,
            }
        },
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "structlog"}},
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            "django.server": {"level": "WARNING"},
            "django.request": {"level": "ERROR"},
            "django.db.backends": {"level": "WARNING"},
            # pgserver narrates every handle it opens and closes (also from atexit, after streams close).
            "pgserver": {"level": "WARNING"},
        },
    }


def configure_logging(*, level: str = "INFO", fmt: str = "auto") -> None:
    logging.config.dictConfig(logging_dict(level=level, fmt=fmt))
    structlog.configure(
        processors=[*_shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
