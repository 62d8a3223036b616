"""Structured logs: one JSON object per line on stdout (a console rendering on a terminal).

Request context (agency, rpc) is bound in contextvars by the servicers, so every line of a
call carries it. Payloads never enter the logs: only ids, types, outcomes and timings.

The libraries' own logs (grpc, aiohttp, nats-py, asyncio: Python's `logging`) go through the
same renderer, each line with its `logger` name, instead of plain text on stderr.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO, cast

import structlog


class _Current:
    """Whatever `sys.stdout` (or `sys.stderr`) is when a line is written, not when logging was
    configured:
    loggers are cached on first use, and a stream swapped in for a while (a test runner's
    capture, an embedding application) may be closed by the time they write.

    A line is written whole, in one write, at its newline (print writes the text and the newline
    apart, two system calls when stdout is unbuffered): the workers of `serve --workers` share
    one stdout, and their lines must not interleave."""

    def __init__(self, stream: str = "stdout") -> None:
        self._stream = stream
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if self._pending.endswith("\n"):
            line, self._pending = self._pending, ""
            getattr(sys, self._stream).write(line)
        return len(text)

    def flush(self) -> None:
        getattr(sys, self._stream).flush()


# Tracebacks as data, without the frames' local variables: they may hold an event's payload
# or a secret, which never enter the logs.
_TRACEBACKS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


def _adding(fields: Mapping[str, str]) -> structlog.typing.Processor:
    """A processor that gives every line `fields` (e.g. the worker of `serve --workers`)."""

    def add(_: Any, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
        for key, value in fields.items():
            event.setdefault(key, value)
        return event

    return add


def configure(
    level: str = "info",
    *,
    json: bool | None = None,
    fields: Mapping[str, str] | None = None,
    libraries_to: str = "stdout",
) -> None:
    """Log at `level` and above; `fields` are added to every line. `libraries_to`: "stderr"
    for a command whose standard output is its result (the auditor's report), which the
    libraries' records (a pending task destroyed at exit, say) must not mix into."""
    render_json = (not sys.stdout.isatty()) if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if render_json else structlog.dev.ConsoleRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        *([_adding(dict(fields))] if fields else []),
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    _route_library_logs(level, renderer, shared, libraries_to)
    structlog.configure(
        processors=[
            *shared,
            _TRACEBACKS,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _Current())),
        cache_logger_on_first_use=True,
    )


def _route_library_logs(
    level: str,
    renderer: structlog.typing.Processor,
    shared: list[structlog.typing.Processor],
    stream: str,
) -> None:
    """Python `logging` records (the libraries') rendered like structlog's lines, with the
    record's logger name, on `stream`."""
    handler = logging.StreamHandler(cast(TextIO, _Current(stream)))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _TRACEBACKS,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "dutylink", False)]:
        root.removeHandler(old)
    handler.dutylink = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.getLevelNamesMapping()[level.upper()])
