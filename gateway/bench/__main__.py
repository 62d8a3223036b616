"""`python -m gateway.bench echo [--port N]`: the echo baseline's server, in its own process."""

from __future__ import annotations

import argparse
import asyncio

from gateway.bench.raw import serve_echo

parser = argparse.ArgumentParser(prog="python -m gateway.bench")
parser.add_argument("command", choices=["echo"])
parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
asyncio.run(serve_echo(parser.parse_args().port))
