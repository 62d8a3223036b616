"""The gateway's log lines: the libraries' own records (grpc, aiohttp, nats-py, asyncio) come out
as the same JSON lines as DutyLink's, with their logger's name, and no line carries a traceback's
local variables (they may hold a payload or a secret)."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from gateway.telemetry import logs


def lines(captured: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in captured.splitlines() if line.startswith("{")]


def test_library_records_are_json_lines_with_their_logger_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("info", json=True, fields={"worker": "w1"})
    logs.configure("info", json=True, fields={"worker": "w1"})  # again: still one handler
    logging.getLogger("aiohttp.server").error("Error handling request from %s", "127.0.0.1")
    logging.getLogger("nats.aio.client").debug("below the level: not shown")
    structlog.get_logger("dutylink.gateway").info("gateway.started")
    (library, own) = lines(capsys.readouterr().out)
    assert library["logger"] == "aiohttp.server" and library["level"] == "error"
    assert library["event"] == "Error handling request from 127.0.0.1"
    assert library["worker"] == own["worker"] == "w1" and "timestamp" in library
    assert own["event"] == "gateway.started"


def test_no_line_shows_a_tracebacks_local_variables(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("info", json=True)
    reporter_phone = "13800138000"
    try:
        raise ValueError("unreadable event")
    except ValueError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
        structlog.get_logger("dutylink.gateway").exception("publish.failed")
    out = capsys.readouterr().out
    assert reporter_phone not in out
    library, own = lines(out)
    for line in (library, own):
        (error,) = line["exception"]  # type: ignore[misc]
        assert error["exc_type"] == "ValueError" and error["frames"]
        assert all("locals" not in frame or not frame["locals"] for frame in error["frames"])


def test_a_command_whose_output_is_its_result_gets_the_libraries_records_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The audit CLI's standard output is the auditor's report: a library's record (asyncio's
    "Task was destroyed but it is pending!" at exit, say) goes to standard error."""
    logs.configure("error", json=True, libraries_to="stderr")
    logging.getLogger("asyncio").error("Task was destroyed but it is pending!")
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = lines(captured.err)
    assert line["logger"] == "asyncio" and line["level"] == "error"
