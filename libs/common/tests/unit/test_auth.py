import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from leaderboard.common.auth import AuthError, TokenVerifier, ensure_dev_keys, mint_token, token_claims
from leaderboard.common.settings import CommonSettings


@pytest.fixture
def settings(tmp_path: Path) -> CommonSettings:
    return CommonSettings(keys_dir=tmp_path / "keys")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_minted_token_verifies(settings: CommonSettings) -> None:
    sub = str(uuid.uuid4())
    token = mint_token(settings, sub=sub, role="player", name="Ada")
    who = TokenVerifier(settings).verify(token)
    assert (who.sub, who.role, who.name) == (sub, "player", "Ada")


def test_dev_keys_are_kept_across_calls(settings: CommonSettings) -> None:
    first = ensure_dev_keys(settings.keys_dir)[0].read_bytes()
    assert ensure_dev_keys(settings.keys_dir)[0].read_bytes() == first


def test_alg_none_and_confusion_refused(settings: CommonSettings) -> None:
    token = mint_token(settings, sub=str(uuid.uuid4()), role="player")
    verifier = TokenVerifier(settings)
    _, payload, _ = token.split(".")
    none = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "." + payload + "."
    with pytest.raises(AuthError):
        verifier.verify(none)
    public_pem = (settings.keys_dir / "jwt-ed25519.pub.pem").read_bytes()
    hs_header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{hs_header}.{payload}".encode()
    forged = f"{hs_header}.{payload}." + b64(hmac.new(public_pem, signing_input, hashlib.sha256).digest())
    with pytest.raises(AuthError):
        verifier.verify(forged)


def test_foreign_key_and_tampering_refused(settings: CommonSettings) -> None:
    ensure_dev_keys(settings.keys_dir)
    verifier = TokenVerifier(settings)
    claims = token_claims(settings, sub=str(uuid.uuid4()), role="player", ttl_s=60)
    other = jwt.encode(
        claims, ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"typ": "JWT"}
    )
    with pytest.raises(AuthError):
        verifier.verify(other)
    good = mint_token(settings, sub=str(uuid.uuid4()), role="player")
    h, p, s = good.split(".")
    body = json.loads(base64.urlsafe_b64decode(p + "=="))
    body["role"] = "admin"
    with pytest.raises(AuthError):
        verifier.verify(f"{h}.{b64(json.dumps(body).encode())}.{s}")


@pytest.mark.parametrize(
    "change,reason",
    [
        ({"exp": -10}, "expired"),
        ({"nbf": 3600}, "not yet valid"),
        ({"iss": "someone-else"}, "issuer"),
        ({"aud": "other-api"}, "audience"),
        ({"role": "superuser"}, "role"),
        ({"sub": "not-a-uuid"}, "sub"),
        ({"ttl": 10 * 86400}, "lifetime"),
    ],
)
def test_claims_enforced(settings: CommonSettings, change: dict[str, object], reason: str) -> None:
    ensure_dev_keys(settings.keys_dir)
    verifier = TokenVerifier(settings)
    now = int(time.time())
    extra = {k: v for k, v in change.items() if k in ("iss", "aud", "role", "sub")}
    claims: dict[str, object] = {
        "sub": str(uuid.uuid4()),
        "role": "player",
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + 60,
        **extra,
    }
    if "exp" in change:
        claims["exp"] = now + int(change["exp"])  # type: ignore[call-overload]
        claims["iat"] = now - 120
    if "nbf" in change:
        claims["nbf"] = now + int(change["nbf"])  # type: ignore[call-overload]
    if "ttl" in change:
        claims["exp"] = now + int(change["ttl"])  # type: ignore[call-overload]
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key((settings.keys_dir / "jwt-ed25519.pem").read_bytes(), None)
    kid = jwt.get_unverified_header(mint_token(settings, sub=str(uuid.uuid4()), role="player"))["kid"]
    token = jwt.encode(claims, key, algorithm="EdDSA", headers={"typ": "JWT", "kid": kid})  # type: ignore[arg-type]
    with pytest.raises(AuthError):
        verifier.verify(token)


def test_hs256_only_with_explicit_secret(tmp_path: Path) -> None:
    secret = "s" * 40
    settings = CommonSettings(keys_dir=tmp_path, jwt_hs256_secret=secret)
    claims = token_claims(settings, sub=str(uuid.uuid4()), role="service", ttl_s=60)
    token = jwt.encode(claims, secret, algorithm="HS256", headers={"typ": "JWT"})
    assert TokenVerifier(settings).verify(token).role == "service"
    with pytest.raises(ValueError):
        CommonSettings(keys_dir=tmp_path, jwt_hs256_secret="short")


def test_missing_typ_refused(settings: CommonSettings) -> None:
    ensure_dev_keys(settings.keys_dir)
    token = mint_token(settings, sub=str(uuid.uuid4()), role="player")
    h, p, s = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(h + "=="))
    header.pop("typ")
    with pytest.raises(AuthError):
        TokenVerifier(settings).verify(f"{b64(json.dumps(header).encode())}.{p}.{s}")


def test_overlong_token_refused_before_decoding(settings: CommonSettings) -> None:
    token = mint_token(settings, sub=str(uuid.uuid4()), role="player")
    verifier = TokenVerifier(settings)
    assert verifier.verify(token).role == "player"
    padded = token + "A" * settings.jwt_max_token_bytes
    with pytest.raises(AuthError, match="longer than"):
        verifier.verify(padded)
    with pytest.raises(AuthError, match="longer than"):
        verifier.verify("x" * 1_300_000)


@pytest.mark.parametrize("name", ["a\x00b", "tab\there", "line\nbreak", "esc\x1b[0m", "c1\x85"])
def test_name_claim_with_control_characters_refused(settings: CommonSettings, name: str) -> None:
    token = mint_token(settings, sub=str(uuid.uuid4()), role="player", name=name)
    verifier = TokenVerifier(settings)
    with pytest.raises(AuthError, match="name claim"):
        verifier.verify(token)
    fine = mint_token(settings, sub=str(uuid.uuid4()), role="player", name="Zoë 🦊")
    assert verifier.verify(fine).name == "Zoë 🦊"
