"""Who is calling: the authenticated `Principal`, from the caller's credentials only.

Today the credential is a per-agency API token in the `authorization: Bearer <token>` metadata
(development mode, logged loudly at start-up); client certificates replace it with the policies
issue. Nothing downstream reads a request to learn who sent it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.config import Agency


class UnauthenticatedError(Exception):
    """The call carries no credential, or one that matches no agency."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: an agency and the roles it holds."""

    agency: str
    roles: frozenset[str] = frozenset()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenAuthenticator:
    """Maps bearer tokens to agencies. Tokens are looked up by their SHA-256 digest, so lookup
    time does not depend on how much of a guessed token is right."""

    def __init__(self, agencies: Iterable[Agency]) -> None:
        self._by_digest = {_digest(a.token): Principal(a.id, frozenset(a.roles)) for a in agencies}

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]]) -> Principal:
        for key, value in metadata:
            if key == "authorization":
                text = value.decode() if isinstance(value, bytes) else value
                scheme, _, token = text.partition(" ")
                if scheme.lower() != "bearer" or not token:
                    raise UnauthenticatedError("authorization metadata must be 'Bearer <token>'")
                principal = self._by_digest.get(_digest(token.strip()))
                if principal is None:
                    raise UnauthenticatedError("unknown token")
                return principal
        raise UnauthenticatedError("no 'authorization: Bearer <token>' metadata")
