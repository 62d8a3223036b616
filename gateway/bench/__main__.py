"""`python -m gateway.bench echo [--port N]` and `python -m gateway.bench relay --nats-url URL
--subject S [--port N]`: the echo and raw relay baselines' servers, each in its own process."""

from __future__ import annotations

import argparse
import asyncio

from gateway.bench.raw import serve_echo, serve_relay

parser = argparse.ArgumentParser(prog="python -m gateway.bench")
parser.add_argument("command", choices=["echo", "relay"])
parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
parser.add_argument("--nats-url", default="", help="relay: the NATS server")
parser.add_argument("--subject", default="", help="relay: the subject to publish to")
arguments = parser.parse_args()
if arguments.command == "echo":
    asyncio.run(serve_echo(arguments.port))
else:
    asyncio.run(serve_relay(arguments.port, arguments.nats_url, arguments.subject))
