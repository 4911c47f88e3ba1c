"""A JWKS URL (an identity provider's key endpoint, served here on loopback): a key added to the set
verifies once the set is refetched, a key removed from it stops verifying once the cached set expires,
and random kids do not make the verifier hammer the endpoint."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from leaderboard.common.auth import AuthError, TokenVerifier, token_claims
from leaderboard.common.settings import CommonSettings


class KeyServer:
    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                body = json.dumps({"keys": server.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def publish(self, *pairs: tuple[str, ed25519.Ed25519PrivateKey]) -> None:
        self.keys = [
            {**json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key())), "kid": kid}
            for kid, key in pairs
        ]


@pytest.fixture
def idp() -> Iterator[KeyServer]:
    server = KeyServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def token(settings: CommonSettings, key: ed25519.Ed25519PrivateKey, kid: str) -> str:
    claims = token_claims(settings, sub=str(uuid.uuid4()), role="service", ttl_s=300)
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"typ": "JWT", "kid": kid})


def test_rotation_through_a_jwks_url(idp: KeyServer, tmp_path: Path) -> None:
    old, new = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    idp.publish(("k1", old))
    settings = CommonSettings(
        keys_dir=tmp_path, jwt_jwks_url=idp.url, jwt_jwks_lifespan_s=1.5, jwt_jwks_cooldown_s=0
    )
    verifier = TokenVerifier(settings)
    assert verifier.fetches_keys
    assert verifier.verify(token(settings, old, "k1")).role == "service"
    with pytest.raises(AuthError):
        verifier.verify(token(settings, new, "k2"))  # not published yet

    idp.publish(("k1", old), ("k2", new))  # rotation starts: both keys valid
    assert verifier.verify(token(settings, new, "k2")).role == "service"
    assert verifier.verify(token(settings, old, "k1")).role == "service"

    idp.publish(("k2", new))  # the old key is retired
    time.sleep(2.0)  # past the cached set's lifespan
    with pytest.raises(AuthError):
        verifier.verify(token(settings, old, "k1"))
    assert verifier.verify(token(settings, new, "k2")).role == "service"


def test_unknown_kids_refetch_at_most_once_per_cooldown(idp: KeyServer, tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    idp.publish(("k1", key))
    settings = CommonSettings(keys_dir=tmp_path, jwt_jwks_url=idp.url, jwt_jwks_cooldown_s=60)
    verifier = TokenVerifier(settings)
    verifier.verify(token(settings, key, "k1"))
    fetched = idp.hits
    for _ in range(20):
        with pytest.raises(AuthError):
            verifier.verify(token(settings, key, uuid.uuid4().hex))
    assert idp.hits <= fetched + 1
