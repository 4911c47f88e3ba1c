"""Ingest settings (env prefix ``LEADERBOARD_``)."""

from __future__ import annotations

from pydantic import Field

from leaderboard.common.settings import HttpServiceSettings


class IngestSettings(HttpServiceSettings):
    port: int = 8080
    # One full batch (1,000 events with 64-character usernames) is about 260 KB.
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    max_batch_events: int = 1000
    wait_timeout_s: float = Field(2.0, ge=0, le=30)
    kafka_send_timeout_s: float = Field(8.0, gt=0)
    retry_after_s: int = 5
    # Rate limits (GCRA): a sustained rate per minute and a burst. Load tests on loopback raise them.
    rate_player_per_min: float = 120
    rate_player_burst: int = 30
    rate_service_per_min: float = 6000
    rate_service_burst: int = 1000
    rate_ip_per_min: float = 1200
    rate_ip_burst: int = 200
    # The completion's client timestamp must lie within this many seconds of the server clock.
    timestamp_skew_s: int = 300
    # How long accepted service actionIds are remembered to report duplicates (the scorer dedupes forever).
    dedupe_window_s: int = 86400
    # A used ticket is remembered this long (a repeat gets 409 with its eventId, not 404) ...
    used_ticket_retention_s: int = 86400
    # ... an unused one this long past its expiry (a late completion gets 410, not 404).
    expired_ticket_retention_s: int = Field(3600, ge=60)
    claim_lease_s: int = 30
    dev_origins: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:8090", "http://localhost:8090"])
    legacy_action_type: str = Field("quest", description="Catalog type that seed 004's POST /score maps to.")
