"""Broadcaster settings (env prefix ``LEADERBOARD_``)."""

from __future__ import annotations

from pydantic import Field

from leaderboard.common.settings import HttpServiceSettings


class BroadcasterSettings(HttpServiceSettings):
    port: int = 8090
    boards: list[str] = Field(default_factory=lambda: ["global"])
    read_requires_token: bool = False
    ws_allowed_origins: list[str] = Field(
        default_factory=list, description="Empty: any origin may subscribe."
    )
    ws_ping_interval_s: float = Field(20.0, gt=0, description="Protocol pings keep NATs open...")
    ws_ping_timeout_s: float = Field(20.0, gt=0, description="...and a peer that misses a pong is closed.")
    ws_idle_timeout_s: float = Field(
        600.0,
        ge=0,
        description="Close a WebSocket that sent nothing for this long (0 = never). The page sends a "
        "heartbeat while visible, so tabs left in the background release their connection.",
    )
    ws_max_per_ip: int = Field(0, ge=0, description="0 = no cap (players often share one NAT address).")
    send_timeout_s: float = Field(10.0, gt=0, description="A client whose socket takes longer is dropped.")
    history_size: int = Field(256, ge=1, description="Board versions kept to answer reconnects with `since`.")
    reconcile_interval_s: float = Field(5.0, gt=0)
    sse_keepalive_s: float = 15.0
    ingest_public_url: str = "http://127.0.0.1:8080"
    max_sse_clients: int = 10_000
