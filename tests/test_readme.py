"""Every code block of the README runs as written, against a gateway with the sample agencies
and policies. The one change made to a block: the gateway is on a free port instead of 50051
(so the command lines get `--target`), and `.venv/bin/dutylink` is this interpreter's CLI.

The two set-up commands (`tools/bootstrap.py demo` and `test`) are not run here: CI runs the
test command itself, and tests/test_demo.py plays the demo's scenario."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dutylink.policies.loader import SAMPLE_DIR
from gateway.server import Gateway
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DEFAULT_ADDRESS = "127.0.0.1:50051"
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def code_blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced block, in order."""
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(README.read_text(encoding="utf-8"))]


def setup_command(code: str) -> bool:
    return code.strip().startswith("python3 tools/bootstrap.py ")


def test_the_readme_has_exactly_two_setup_commands_and_no_block_left_unrun() -> None:
    blocks = code_blocks()
    commands = [code.strip() for _, code in blocks if setup_command(code)]
    assert commands == ["python3 tools/bootstrap.py demo", "python3 tools/bootstrap.py test"]
    assert {language for language, _ in blocks} <= {"sh", "python"}


@pytest.fixture
async def sample_gateway(nats_url: str) -> AsyncIterator[Gateway]:
    async with gateway_for_tests(nats_url, config_for_tests(policy={"dir": str(SAMPLE_DIR)})) as running:  # fmt: skip
        yield running


async def run_block(language: str, code: str, address: str) -> tuple[int, str]:
    code = code.replace(DEFAULT_ADDRESS, address)
    if language == "python":
        command = [sys.executable, "-c", code]
    else:  # the README's shell lines use .venv/bin/dutylink: this interpreter's own
        code = code.replace(".venv/bin/dutylink", f"{sys.executable} -m gateway.cli.main")
        code = code.replace(" --token", f" --target {address} --token")
        command = ["bash", "-euo", "pipefail", "-c", code]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(120):
        output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_every_readme_code_block_runs_as_written(sample_gateway: Gateway) -> None:
    ran = 0
    for language, code in code_blocks():
        if setup_command(code):
            continue
        code_status, output = await run_block(language, code, sample_gateway.address)
        assert code_status == 0, f"README block failed:\n{code}\n--- output ---\n{output}"
        ran += 1
        if language == "python":
            assert "fire received" in output, output
        if "dutylink subscribe" in code:
            assert '"source":"weather"' in output, output
    assert ran >= 2
