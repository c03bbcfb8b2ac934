"""Micro-benchmark of authentication: verify one request, issue one token.

Targets (issue 4): verification per request (token, proof, revocation check) p50 <= 300 us;
issuing a token <= 5 ms. Floors: one bare Ed25519 verify (a proof cannot cost less) and one
bare Ed25519 signature (a token cannot cost less). The library rows are pure CPU; the
`identity_server` rows add the server's own work on a real SQLite store. No root, no PCs.
"""

from __future__ import annotations

import os
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench import identity_server
from bench._stats import Row, render, summarize, time_ms
from corral.identity import (
    AccessTokenClaims,
    DPoPKey,
    ReplayCache,
    SigningKeyring,
    VerifiedTokenCache,
    issue_access_token,
    verify_request,
)

RUNS = int(os.environ.get("CORRAL_BENCH_RUNS", "1000"))
ISSUER = "https://corral.example"
AUDIENCE = "https://corral.example/mcp"
URL = "https://corral.example/v1/sessions/s-1/screenshot"


def _us(samples_ms: list[float]) -> list[float]:
    return [s * 1000 for s in samples_ms]


def _verify_rows(runs: int) -> list[Row]:
    ring = SigningKeyring.generate()
    agent = DPoPKey.generate()
    replay = ReplayCache()
    revoked: set[str] = set()

    def alive(claims: AccessTokenClaims) -> bool:
        return claims.subject not in revoked and claims.token_id not in revoked

    def run(cache: VerifiedTokenCache | None, fresh_token: bool) -> list[float]:
        # Proofs (and tokens) are made beforehand: only the server's work is timed.
        tokens = [
            issue_access_token(
                ring,
                issuer=ISSUER,
                subject="agent:a-1",
                audience=AUDIENCE,
                client_id="a-1",
                jkt=agent.thumbprint,
            ).access_token
            for _ in range(runs if fresh_token else 1)
        ]
        calls = [
            (t, agent.proof("GET", URL, access_token=t))
            for t in (tokens if fresh_token else tokens * runs)
        ]
        if not fresh_token:
            # A client's first call verifies the token's signature and fills the cache.
            verify_request(
                "GET",
                URL,
                f"DPoP {tokens[0]}",
                agent.proof("GET", URL, access_token=tokens[0]),
                keyring=ring,
                issuer=ISSUER,
                audience=AUDIENCE,
                replay=replay,
                revocation=alive,
                token_cache=cache,
            )
        it = iter(calls)

        def one() -> None:
            token, proof = next(it)
            verify_request(
                "GET",
                URL,
                f"DPoP {token}",
                proof,
                keyring=ring,
                issuer=ISSUER,
                audience=AUDIENCE,
                replay=replay,
                revocation=alive,
                token_cache=cache,
            )

        return _us(time_ms(one, runs))

    bare = Ed25519PrivateKey.generate()
    signature = bare.sign(b"x" * 400)
    public = bare.public_key()
    floor = _us(time_ms(lambda: public.verify(signature, b"x" * 400), runs))

    def within(med: float, p95: float, floor_med: float | None) -> bool:
        return med <= 300

    return [
        summarize(
            "verify_request, token seen before (cached signature)",
            run(VerifiedTokenCache(), fresh_token=False),
            unit="us",
            floor=floor,
            target="p50 <= 300 us",
            ok=within,
        ),
        summarize(
            "verify_request, token's first use",
            run(VerifiedTokenCache(), fresh_token=True),
            unit="us",
            floor=floor,
            target="info only",
        ),
    ]


def _issue_row(runs: int) -> Row:
    ring = SigningKeyring.generate()
    jkt = DPoPKey.generate().thumbprint

    def issue() -> None:
        issue_access_token(
            ring,
            issuer=ISSUER,
            subject="agent:a-1",
            audience="s-1",
            client_id="a-1",
            jkt=jkt,
            session_id="s-1",
            scope=("pcs:act",),
        )

    bare = Ed25519PrivateKey.generate()
    floor = _us(time_ms(lambda: bare.sign(b"x" * 400), runs))
    return summarize(
        "issue_access_token",
        _us(time_ms(issue, runs)),
        unit="us",
        floor=floor,
        target="<= 5 ms",
        ok=lambda med, p95, floor_med: med <= 5000,
    )


def main() -> int:
    rows = [*_verify_rows(RUNS), _issue_row(RUNS), *identity_server.rows(RUNS)]
    print(render(rows))
    return 0 if all(r.verdict != "MISS" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
