"""Key sources beyond the dev key: PEM public keys of each allowed algorithm and a JWKS file with
several keys picked by kid (rotation: old and new keys verify side by side)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from leaderboard.common.auth import AuthError, TokenVerifier, token_claims
from leaderboard.common.settings import CommonSettings


def claims(settings: CommonSettings, **changes: Any) -> dict[str, Any]:
    return {**token_claims(settings, sub=str(uuid.uuid4()), role="player", ttl_s=300), **changes}


def public_pem(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def jwk(key: Any, kid: str) -> dict[str, Any]:
    algo: Any = {
        ed25519.Ed25519PrivateKey: jwt.algorithms.OKPAlgorithm,
        ec.EllipticCurvePrivateKey: jwt.algorithms.ECAlgorithm,
        rsa.RSAPrivateKey: jwt.algorithms.RSAAlgorithm,
    }
    for cls, alg in algo.items():
        if isinstance(key, cls):
            return {**json.loads(alg.to_jwk(key.public_key())), "kid": kid}
    raise AssertionError(type(key))


@pytest.mark.parametrize(
    ("make", "alg"),
    [
        (ed25519.Ed25519PrivateKey.generate, "EdDSA"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
    ],
)
def test_pem_public_keys_of_each_allowed_algorithm(tmp_path: Path, make: Any, alg: str) -> None:
    key = make()
    (tmp_path / "pub.pem").write_bytes(public_pem(key))
    settings = CommonSettings(keys_dir=tmp_path / "none", jwt_public_key_file=tmp_path / "pub.pem")
    verifier = TokenVerifier(settings)
    good = jwt.encode(claims(settings), key, algorithm=alg, headers={"typ": "JWT"})
    assert verifier.verify(good).role == "player"
    headers = {"typ": "JWT"}
    for bad in (claims(settings, iss="other"), claims(settings, aud="other"), claims(settings, exp=1)):
        with pytest.raises(AuthError):
            verifier.verify(jwt.encode(bad, key, algorithm=alg, headers=headers))


def test_an_rsa_key_verifies_rs256_only(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "pub.pem").write_bytes(public_pem(key))
    settings = CommonSettings(keys_dir=tmp_path / "none", jwt_public_key_file=tmp_path / "pub.pem")
    pss = jwt.encode(claims(settings), key, algorithm="PS256", headers={"typ": "JWT"})
    with pytest.raises(AuthError, match="algorithm"):
        TokenVerifier(settings).verify(pss)


def test_short_rsa_keys_are_refused(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    (tmp_path / "pub.pem").write_bytes(public_pem(key))
    settings = CommonSettings(keys_dir=tmp_path / "none", jwt_public_key_file=tmp_path / "pub.pem")
    with pytest.raises(ValueError, match="2048"):
        TokenVerifier(settings)


def test_a_jwks_file_verifies_each_key_by_kid(tmp_path: Path) -> None:
    old, new = ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1())
    stranger = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk(old, "2025-old"), jwk(new, "2026-new")]}))
    settings = CommonSettings(keys_dir=tmp_path / "none", jwt_jwks_file=tmp_path / "jwks.json")
    verifier = TokenVerifier(settings)
    assert not verifier.fetches_keys

    def token(key: Any, alg: str, kid: str | None) -> str:
        headers = {"typ": "JWT", **({"kid": kid} if kid else {})}
        return jwt.encode(claims(settings), key, algorithm=alg, headers=headers)

    assert verifier.verify(token(old, "EdDSA", "2025-old")).role == "player"
    assert verifier.verify(token(new, "ES256", "2026-new")).role == "player"
    refused = {
        "unknown kid": token(stranger, "EdDSA", "2027-next"),
        "no kid with several keys": token(old, "EdDSA", None),
        "kid of another key": token(stranger, "EdDSA", "2025-old"),
        "algorithm other than the kid's key": token(new, "ES256", "2025-old"),
    }
    for why, bad in refused.items():
        with pytest.raises(AuthError):
            verifier.verify(bad)
            pytest.fail(why)


def test_a_jwks_key_without_kid_is_a_configuration_error(tmp_path: Path) -> None:
    key = jwk(ed25519.Ed25519PrivateKey.generate(), "x")
    del key["kid"]
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [key]}))
    with pytest.raises(ValueError, match="kid"):
        TokenVerifier(CommonSettings(keys_dir=tmp_path, jwt_jwks_file=tmp_path / "jwks.json"))
