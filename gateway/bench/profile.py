"""The `profile` section: the national crypto profile (SM3 tree, SM2 checkpoints, SM4-GCM sealed
personal fields, HMAC-SM3 commitments) against the international one (SHA-256, Ed25519,
AES-256-GCM), end to end in interleaved runs of the same gateway, and the checkpoint signature
alone."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from dutylink.policies.loader import SAMPLE_DIR
from gateway.audit.note import ED25519, SM2, KeyType, Signer
from gateway.bench.figures import Figure, Settings, Target, make_figure
from gateway.bench.harness import Series, interleave
from gateway.bench.throughput import GatewayRates, gateway_rates
from gateway.core.settings import CryptoProfileName

# Checkpoints signed per sample: enough that one sample is well above the clock's resolution.
SIGNATURES = 200
# The goal: the national profile at most 15 % slower end to end.
NATIONAL_AT_LEAST = Target(0.85, of_ratio=True)

# The end-to-end rates compared, as the `publish` section measures them.
_RATES: tuple[tuple[str, Callable[[GatewayRates], float]], ...] = (
    ("PublishBatch, 500 per call", lambda r: r.batched),
    ("Subscribe, delivered and acked", lambda r: r.delivered),
    ("Publish, unary", lambda r: r.unary.rate),
)

# A checkpoint note's body as the log signs it (origin, size, root).
_CHECKPOINT = b"dutylink/audit/bench\n123456\n" + b"A" * 44 + b"\n"


def signing_ms(key_type: KeyType) -> float:
    """The median time to sign one checkpoint with a key of `key_type`, in ms."""
    signer = Signer.generate("dutylink/audit/bench", key_type)
    times = []
    for _ in range(SIGNATURES):
        started = time.perf_counter()
        signer.sign(_CHECKPOINT)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def profile_figures(settings: Settings) -> list[Figure]:
    def rates(profile: CryptoProfileName) -> Series[GatewayRates]:
        return Series(
            lambda d: gateway_rates(
                d,
                count=settings.count,
                policy_dir=SAMPLE_DIR,
                nats_url=settings.nats_url,
                in_process=settings.in_process,
                crypto_profile=profile,
            )
        )

    international, national = rates("international"), rates("national")
    await interleave(settings.runs, [international, national])
    figures = [
        make_figure(
            "profile",
            f"national profile: {name}",
            "events/s",
            [rate(r) for r in national.samples],
            ("international profile", [rate(r) for r in international.samples]),
            NATIONAL_AT_LEAST,
        )
        for name, rate in _RATES
    ]
    sm2, ed25519 = [], []
    for _ in range(settings.runs):
        sm2.append(signing_ms(SM2))
        ed25519.append(signing_ms(ED25519))
    figures.append(
        make_figure(
            "profile",
            "checkpoint signature: SM2 (with its ID, over SM3)",
            "ms",
            sm2,
            ("Ed25519", ed25519),
        )
    )
    return figures
