"""JWT verification and dev-token minting (RFC 8725 practices, pyjwt).

Why pyjwt alone: it already enforces the algorithm allowlist, required claims, leeway and JWKS
(``PyJWKClient``); what it leaves to us is choosing the key and its algorithm *from our own key
set*, never from the token header, which is what defeats ``alg: none`` and algorithm confusion.

Key sources, in order: a JWKS file, a JWKS URL, a PEM public key file, the dev key pair under
``keys_dir`` (generated on first use, kept across starts). HS256 is accepted only when
``jwt_hs256_secret`` is set explicitly.

A token longer than ``jwt_max_token_bytes`` is refused before anything decodes it: base64 and JSON
work on a megabyte-long token costs CPU on every request, for a credential that is a few hundred bytes.

:func:`authenticate` is the one way every service turns an ``Authorization`` header into a principal
(HTTP routes, WebSocket handshakes, the scorer's admin page): the same parsing, the same refusals, and
verification off the event loop whenever the verifier may fetch keys over the network.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from leaderboard.common.events import unsafe_char
from leaderboard.common.settings import CommonSettings

Role = Literal["player", "service", "admin"]
ROLES: tuple[Role, ...] = ("player", "service", "admin")
ASYMMETRIC = ("EdDSA", "ES256", "RS256")
ALLOWED_TYP = ("JWT", "at+jwt")
PRIVATE_KEY_NAME = "jwt-ed25519.pem"
PUBLIC_KEY_NAME = "jwt-ed25519.pub.pem"


log = logging.getLogger(__name__)


class AuthError(Exception):
    """The token is missing, malformed, or not acceptable. Always a 401.

    ``challenge`` is the ``WWW-Authenticate`` value that goes with the refusal (RFC 6750 §3).
    """

    challenge = 'Bearer error="invalid_token"'


class MissingToken(AuthError):
    """No bearer token at all (no header, another scheme, or an empty credential)."""

    challenge = "Bearer"

    def __init__(self, message: str = "missing bearer token") -> None:
        super().__init__(message)


@dataclass(frozen=True)
class Principal:
    sub: str
    role: Role
    name: str | None
    claims: dict[str, Any]


@dataclass(frozen=True)
class VerificationKey:
    kid: str
    algorithm: str
    key: Any


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def okp_thumbprint(public_key: ed25519.Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint, used as the key id so that JWKS rotation works the same way."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": _b64(raw)}, separators=(",", ":"))
    return _b64(hashlib.sha256(canonical.encode()).digest())


def ensure_dev_keys(keys_dir: Path) -> tuple[Path, Path]:
    """Create the dev Ed25519 key pair once; later calls reuse it."""
    private_path, public_path = keys_dir / PRIVATE_KEY_NAME, keys_dir / PUBLIC_KEY_NAME
    if private_path.exists() and public_path.exists():
        return private_path, public_path
    keys_dir.mkdir(parents=True, exist_ok=True)
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = private_path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    os.replace(tmp, private_path)
    return private_path, public_path


def _algorithm_for(key: Any) -> str:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name != "secp256r1":
            raise ValueError(f"unsupported EC curve {key.curve.name}")
        return "ES256"
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError("RSA keys under 2048 bits are refused")
        return "RS256"
    raise ValueError(f"unsupported key type {type(key).__name__}")


def _pem_key(path: Path) -> VerificationKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    kid = okp_thumbprint(key) if isinstance(key, ed25519.Ed25519PublicKey) else path.name
    return VerificationKey(kid=kid, algorithm=_algorithm_for(key), key=key)


def _jwks_keys(document: dict[str, Any]) -> list[VerificationKey]:
    keys = []
    for jwk in jwt.PyJWKSet.from_dict(document).keys:
        if jwk.key_id is None:
            raise ValueError("every JWKS key needs a kid")
        keys.append(VerificationKey(kid=jwk.key_id, algorithm=_algorithm_for(jwk.key), key=jwk.key))
    return keys


class VerifiedTokens:
    """A bounded cache of tokens that passed :meth:`TokenVerifier.verify`, keyed by the token's full text.

    An entry answers until ``valid_until`` (the token's ``exp`` plus the leeway pyjwt grants, and at
    most ``max_age_s`` after it was verified), then is dropped; the least recently used entry goes
    when ``size`` is reached. Only successes are ever put here: a refused token is refused again by
    the full check on its next use. Any change to a token (one byte of its signature, a claim) is
    another key, so a cached entry can only answer for the exact text that was verified.

    Why not ``functools.lru_cache`` or cachetools: neither expires an entry at a time of its own
    (the token's exp) with a size bound, and this is twenty lines. Thread-safe: the broadcaster and
    the scorer may verify in threads (JWKS).
    """

    def __init__(self, size: int, max_age_s: float, clock: Callable[[], float] | None = None) -> None:
        self.size, self.max_age_s = size, max_age_s
        self._clock = clock or (lambda: time.time())
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> Principal | None:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                return None
            if now >= entry[0]:
                del self._entries[token]
                return None
            self._entries.move_to_end(token)
            return entry[1]

    def put(self, token: str, principal: Principal, valid_until: float) -> None:
        if self.size <= 0:
            return
        valid_until = min(valid_until, self._clock() + self.max_age_s)
        with self._lock:
            self._entries[token] = (valid_until, principal)
            self._entries.move_to_end(token)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


class TokenVerifier:
    """Verifies bearer tokens against a fixed key set and returns the principal.

    Verified tokens are remembered (:class:`VerifiedTokens`, ``jwt_cache_size`` of them) until they
    expire: a signature check costs more than the rest of a request, and a client sends the same
    token on every request.
    """

    def __init__(self, settings: CommonSettings, clock: Callable[[], float] | None = None) -> None:
        self._cache = VerifiedTokens(settings.jwt_cache_size, settings.jwt_jwks_lifespan_s, clock)
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._max_lifetime = settings.jwt_max_lifetime_s
        self._leeway = settings.jwt_leeway_s
        self._max_token_bytes = settings.jwt_max_token_bytes
        self._keys: dict[str, VerificationKey] = {}
        self._jwks_client: jwt.PyJWKClient | None = None
        if settings.jwt_jwks_file:
            for k in _jwks_keys(json.loads(settings.jwt_jwks_file.read_text())):
                self._keys[k.kid] = k
        if settings.jwt_jwks_url:
            # No per-kid cache (cache_keys): it never expires, so a key retired from the JWKS would go on
            # verifying. The whole set is cached for `jwt_jwks_lifespan_s` instead, and an unknown kid
            # refetches it at most once per `jwt_jwks_cooldown_s`, so random kids cannot hammer the IdP.
            self._jwks_client = jwt.PyJWKClient(
                settings.jwt_jwks_url,
                cache_keys=False,
                lifespan=settings.jwt_jwks_lifespan_s,
                cooldown_duration=settings.jwt_jwks_cooldown_s,
                timeout=settings.jwt_jwks_timeout_s,
            )
        if settings.jwt_public_key_file:
            k = _pem_key(settings.jwt_public_key_file)
            self._keys[k.kid] = k
        if not self._keys and not self._jwks_client and settings.jwt_hs256_secret is None:
            public = settings.keys_dir / PUBLIC_KEY_NAME
            if not public.exists():
                raise RuntimeError(
                    f"no JWT verification key: set LEADERBOARD_JWT_PUBLIC_KEY_FILE or create the dev key pair "
                    f"in {settings.keys_dir} (`leaderboard token` does)"
                )
            k = _pem_key(public)
            self._keys[k.kid] = k
        self._hs_secret = settings.jwt_hs256_secret.get_secret_value() if settings.jwt_hs256_secret else None

    @property
    def fetches_keys(self) -> bool:
        """True when :meth:`verify` may fetch a JWKS over the network (and so block): async callers
        should then run it in a thread."""
        return self._jwks_client is not None

    def _key_for(self, header: dict[str, Any]) -> VerificationKey:
        alg = header.get("alg")
        kid = header.get("kid")
        if alg == "HS256" and self._hs_secret is not None and kid is None:
            return VerificationKey(kid="", algorithm="HS256", key=self._hs_secret)
        if alg not in ASYMMETRIC:
            raise AuthError(f"algorithm {alg!r} is not accepted")
        if kid is not None and not isinstance(kid, str):
            raise AuthError("kid must be a string")
        found = self._keys.get(kid) if kid else None
        if found is None and kid and self._jwks_client is not None:
            try:
                jwk = self._jwks_client.get_signing_key(kid)
            except jwt.PyJWKClientError as exc:
                raise AuthError("unknown key id") from exc
            try:
                found = VerificationKey(kid=kid, algorithm=_algorithm_for(jwk.key), key=jwk.key)
            except ValueError as exc:
                raise AuthError("unsupported signing key") from exc
        if found is None and kid is None and len(self._keys) == 1:
            found = next(iter(self._keys.values()))
        if found is None:
            raise AuthError("unknown key id")
        if found.algorithm != alg:
            raise AuthError("token algorithm does not match the key")
        return found

    def verify(self, token: str) -> Principal:
        if len(token) > self._max_token_bytes:
            raise AuthError(f"token longer than {self._max_token_bytes} bytes")
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        principal = self._verify(token)
        # pyjwt accepts a token until exp + leeway; so does the cache, and not a moment longer.
        self._cache.put(token, principal, int(principal.claims["exp"]) + self._leeway)
        return principal

    def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError("malformed token") from exc
        if header.get("typ") not in ALLOWED_TYP:
            raise AuthError("token type must be JWT")
        key = self._key_for(header)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "sub", "iss", "aud"], "verify_iat": True},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthError("token not yet valid") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        iat, exp = claims["iat"], claims["exp"]
        if not isinstance(iat, int | float) or not isinstance(exp, int | float):
            raise AuthError("iat and exp must be numbers")
        if iat > time.time() + self._leeway:
            raise AuthError("token issued in the future")
        if exp - iat > self._max_lifetime:
            raise AuthError("token lifetime exceeds the maximum")
        nbf = claims.get("nbf")
        if nbf is not None and not isinstance(nbf, int | float):
            raise AuthError("nbf must be a number")
        role = claims.get("role")
        if role not in ROLES:
            raise AuthError("role claim missing or unknown")
        sub = claims["sub"]
        try:
            uuid.UUID(str(sub))
        except ValueError as exc:
            raise AuthError("sub must be a UUID") from exc
        name = claims.get("name")
        if name is not None and (not isinstance(name, str) or not 0 < len(name) <= 64):
            raise AuthError("name claim must be 1..64 characters")
        if name is not None and (problem := unsafe_char(name)) is not None:
            # the name becomes the event's username: what the stores cannot hold is refused here
            raise AuthError(f"name claim must not contain {problem}")
        return Principal(sub=str(uuid.UUID(str(sub))), role=role, name=name, claims=claims)


def token_claims(
    settings: CommonSettings, *, sub: str, role: Role, name: str | None = None, ttl_s: int = 3600
) -> dict[str, Any]:
    """The claims this deployment requires (SPEC §4), valid from now for ``ttl_s`` seconds."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "role": role,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + ttl_s,
        "jti": uuid.uuid4().hex,
    }
    if name:
        claims["name"] = name
    return claims


def mint_token(
    settings: CommonSettings,
    *,
    sub: str,
    role: Role,
    name: str | None = None,
    ttl_s: int = 3600,
    extra_claims: dict[str, Any] | None = None,
) -> str:
    """Sign a token with the dev private key (``keys_dir``), creating the key pair if needed."""
    private_path, _ = ensure_dev_keys(settings.keys_dir)
    private = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    if not isinstance(private, ed25519.Ed25519PrivateKey):
        raise RuntimeError(f"{private_path} is not an Ed25519 key")
    claims = {**token_claims(settings, sub=sub, role=role, name=name, ttl_s=ttl_s), **(extra_claims or {})}
    headers = {"kid": okp_thumbprint(private.public_key()), "typ": "JWT"}
    return jwt.encode(claims, private, algorithm="EdDSA", headers=headers)


def bearer_token(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <token>`` header value, or None when there is none.

    Parsed as FastAPI's ``HTTPBearer`` does: the scheme is case-insensitive and the credential is
    what follows the first space, stripped.
    """
    if not authorization:
        return None
    scheme, _, credential = authorization.partition(" ")
    credential = credential.strip()
    if not scheme or not credential or scheme.lower() != "bearer":
        return None
    return credential


async def authenticate(authorization: str | None, verifier: TokenVerifier) -> Principal:
    """The principal of an ``Authorization`` header value; :class:`AuthError` (or :class:`MissingToken`)
    otherwise.

    A verifier that may fetch a JWKS runs in a thread, so that a slow identity provider cannot stall
    the event loop. A verifier bug fails closed, as an :class:`AuthError` and never as an exception
    that would become a 500.
    """
    token = bearer_token(authorization)
    if token is None:
        raise MissingToken()
    try:
        if verifier.fetches_keys:
            return await asyncio.to_thread(verifier.verify, token)
        return verifier.verify(token)
    except AuthError:
        raise
    except Exception as exc:
        log.exception("token verification failed unexpectedly")
        raise AuthError("invalid token") from exc
