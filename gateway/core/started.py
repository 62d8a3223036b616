"""`async with` for the things the gateway and its tests start and stop (servers, clusters,
proxies, processes)."""

from __future__ import annotations

from typing import Self


class Started:
    """`async with thing:` starts it and stops it on the way out, whatever happened inside.
    Subclasses define `start` and `stop`."""

    async def start(self) -> object:
        raise NotImplementedError

    async def stop(self) -> object:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
