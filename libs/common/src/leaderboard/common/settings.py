"""Settings for every service (pydantic-settings, env prefix ``LEADERBOARD_``).

Each service subclasses :class:`CommonSettings` and builds its settings in its lifespan or
bootstrap, never at import time, so tests and the dev supervisor can point a process at any stack
through the environment alone.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_KAFKA = "127.0.0.1:19092"
DEFAULT_REDIS = "redis://127.0.0.1:16379/0"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:15432/leaderboard"


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEADERBOARD_", extra="ignore")

    dev_mode: bool = Field(False, description="Dev conveniences: /api/v1/dev/token, demo CORS, dev keys.")

    # Kafka. Idempotence is on for real Kafka; the embedded broker (Tansu) lacks InitProducerId.
    kafka_bootstrap: str = DEFAULT_KAFKA
    kafka_idempotence: bool = True
    kafka_security_protocol: Literal["PLAINTEXT", "SSL"] = "PLAINTEXT"
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_request_timeout_ms: int = 5_000
    # How long a consumer's fetch may wait for data. Tansu answers a fetch over several partitions only
    # when this runs out, even if data arrived meanwhile, so it bounds the live board's delay; on Kafka
    # a fetch returns as soon as data arrives and this only paces idle polling.
    kafka_fetch_max_wait_ms: int = Field(50, ge=1, le=1_500)
    topic_prefix: str = ""
    actions_partitions: int = Field(8, ge=1)
    topic_replication: int = Field(1, ge=1)

    # Redis and Postgres. TLS: use rediss:// and ?sslmode=require in the URLs.
    redis_url: str = DEFAULT_REDIS
    redis_prefix: str = "lb"
    postgres_dsn: str = DEFAULT_POSTGRES

    # JWT (RFC 8725): asymmetric keys; HS256 only when a shared secret is configured explicitly.
    jwt_issuer: str = "leaderboard"
    jwt_audience: str = "leaderboard-api"
    jwt_public_key_file: Path | None = None
    jwt_jwks_file: Path | None = None
    jwt_jwks_url: str | None = None
    # A fetched JWKS is kept this long, so a key removed from it stops verifying after at most this.
    jwt_jwks_lifespan_s: float = Field(300, gt=0)
    # A token with an unknown kid refetches the JWKS (key rotation) at most this often.
    jwt_jwks_cooldown_s: float = Field(30, ge=0)
    jwt_jwks_timeout_s: float = Field(5, gt=0)
    jwt_hs256_secret: SecretStr | None = None
    jwt_max_lifetime_s: int = Field(24 * 3600, ge=60)
    jwt_leeway_s: int = Field(10, ge=0, le=120)
    # Longer bearer tokens get 401 before any decoding (ours are ~400 bytes; an IdP's rarely pass 2 KB).
    jwt_max_token_bytes: int = Field(8 * 1024, ge=256)
    # Verified tokens kept (by their full text) until their expiry, so a client's next request skips
    # the signature check; 0 turns the cache off. An entry lives at most `jwt_jwks_lifespan_s`, so
    # a key retired from the key set stops verifying as promptly as without the cache.
    jwt_cache_size: int = Field(10_000, ge=0)
    keys_dir: Path = Path(".leaderboard/keys")

    catalog_file: Path | None = Field(
        None, description="TOML action catalog; the packaged default when unset."
    )
    boards_file: Path | None = Field(
        None, description="TOML board catalog (leaderboard.common.boards); the packaged default when unset."
    )
    board_top_n: int = Field(10, ge=1, le=100)
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _refuse_weak_secret(self) -> CommonSettings:
        secret = self.jwt_hs256_secret
        if secret is not None and len(secret.get_secret_value()) < 32 and not self.dev_mode:
            raise ValueError("LEADERBOARD_JWT_HS256_SECRET must be at least 32 characters outside dev mode")
        return self

    def kafka_client_options(self) -> dict[str, object]:
        """Connection options shared by every aiokafka client."""
        opts: dict[str, object] = {
            "bootstrap_servers": self.kafka_bootstrap,
            "request_timeout_ms": self.kafka_request_timeout_ms,
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_security_protocol == "SSL":
            import ssl

            ctx = ssl.create_default_context(
                cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None
            )
            if self.kafka_ssl_certfile:
                ctx.load_cert_chain(str(self.kafka_ssl_certfile), str(self.kafka_ssl_keyfile or ""))
            opts["ssl_context"] = ctx
        return opts


class HttpServiceSettings(CommonSettings):
    """Settings shared by the two HTTP services (ingest and broadcaster)."""

    host: str = "127.0.0.1"
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    cors_origins: list[str] = Field(default_factory=list)
    trusted_proxies: list[str] = Field(
        default_factory=list, description="CIDRs whose X-Forwarded-For is believed."
    )
    # Bounds on a request head, held by leaderboard.common.server before the app sees anything.
    http_max_header_bytes: int = Field(16 * 1024, ge=1024, description="Request line and headers (431).")
    http_max_header_count: int = Field(100, ge=8, le=1000, description="Header fields (431).")
    # The WebSocket handshake line must fit the websockets library's 8 KiB line limit.
    http_max_target_bytes: int = Field(
        8000, ge=256, le=8100, description="Request target, query included (414)."
    )
    http_header_timeout_s: float = Field(10, gt=0, description="Time to send a request head (408).")
    # How long an idle keep-alive connection is kept. uvicorn's default (5 s) equals the idle expiry of
    # common client pools (httpx's is 5 s): a pooled connection reused just as the server closes it
    # fails the request with no answer (a POST is not retried). Longer than the pools and than load
    # balancers' idle timeouts (ALB and ingress-nginx: 60 s), the client side always closes first.
    http_keep_alive_s: float = Field(
        75, gt=0, le=3600, description="Idle time before a keep-alive connection is closed."
    )

    def uvicorn_options(self, port: int) -> dict[str, Any]:
        """What both HTTP services pass to ``uvicorn.run`` besides their own protocol options."""
        from leaderboard.common.server import HeadLimits, guarded_protocol  # uvicorn: HTTP services only

        limits = HeadLimits(
            max_bytes=self.http_max_header_bytes,
            max_count=self.http_max_header_count,
            max_target_bytes=self.http_max_target_bytes,
            timeout_s=self.http_header_timeout_s,
        )
        return {
            # Always httptools, with bounds on the request head and refusals in the error shape.
            "http": guarded_protocol(limits),
            "host": self.host,
            "port": port,
            "log_config": None,
            "access_log": False,
            "timeout_keep_alive": self.http_keep_alive_s,
            # uvicorn would otherwise rewrite the client address from X-Forwarded-For for any peer in
            # FORWARDED_ALLOW_IPS (127.0.0.1 by default), behind our back: the client IP is decided only
            # by ClientIpResolver and the `trusted_proxies` setting.
            "proxy_headers": False,
            "ssl_certfile": str(self.tls_certfile) if self.tls_certfile else None,
            "ssl_keyfile": str(self.tls_keyfile) if self.tls_keyfile else None,
        }


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load_settings(cls: type[SettingsT], service: str) -> SettingsT:
    """A service's settings from its environment, or exit 2 with pydantic's message alone on stderr:
    a configuration mistake (an unparsable or out-of-range ``LEADERBOARD_*`` value) is the operator's
    to fix, not a crash, so no traceback."""
    try:
        return cls()
    except ValidationError as exc:
        sys.stderr.write(f"leaderboard {service}: invalid settings: {exc}\n")
        raise SystemExit(2) from None
