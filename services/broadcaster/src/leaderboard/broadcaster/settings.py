"""Broadcaster settings (env prefix ``LEADERBOARD_``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from leaderboard.common.boardkeys import DEFAULT_BOARD
from leaderboard.common.boards import BoardCatalog
from leaderboard.common.settings import HttpServiceSettings


class BroadcasterSettings(HttpServiceSettings):
    port: int = 8090
    boards: list[str] = Field(
        default_factory=lambda: [DEFAULT_BOARD],
        description="The boards this instance serves. Unset: every board of the board catalog "
        "(LEADERBOARD_BOARDS_FILE); set: only these, each of which the catalog must define.",
    )
    postgres_pool_size: int = Field(
        4, ge=1, le=100, description="Connections for archive reads (past periods) and entry metadata."
    )
    clock_offset_s: float = Field(
        0.0,
        description="Test hook: this instance's clock runs this many seconds ahead (negative: behind) "
        "of the system clock when it decides which period of a windowed board is current.",
    )
    read_requires_token: bool = False
    ws_allowed_origins: list[str] | None = Field(
        None,
        description="Origins whose pages may open /ws/leaderboard, besides the broadcaster's own page "
        "(always allowed) and non-browser clients (no Origin header). Required outside dev mode: "
        "'[]' for the own page only, '[\"*\"]' for any origin. Unset in dev mode: any origin.",
    )
    ws_ping_interval_s: float = Field(20.0, gt=0, description="Protocol pings keep NATs open...")
    ws_ping_timeout_s: float = Field(20.0, gt=0, description="...and a peer that misses a pong is closed.")
    ws_idle_timeout_s: float = Field(
        600.0,
        ge=0,
        description="Close a WebSocket that sent nothing for this long (0 = never). The page sends a "
        "heartbeat while visible, so tabs left in the background release their connection.",
    )
    ws_max_per_ip: int = Field(
        50,
        ge=0,
        description="Live connections (WebSocket) per client IP; 0 = no cap. 50 leaves room for a NATed "
        "office or school on one address; behind a proxy, set trusted_proxies so the cap sees clients.",
    )
    send_timeout_s: float = Field(10.0, gt=0, description="A client whose socket takes longer is dropped.")
    history_size: int = Field(256, ge=1, description="Board versions kept to answer reconnects with `since`.")
    reconcile_interval_s: float = Field(5.0, gt=0)
    sse_keepalive_s: float = 15.0
    ingest_public_url: str = "http://127.0.0.1:8080"
    max_sse_clients: int = 10_000
    drain_retry_ms: int = Field(
        2000,
        ge=0,
        le=600_000,
        description="On SIGTERM every live client is told to reconnect after its own random delay of "
        '0.5-1.5 x this (WebSocket close 1012 with {"retryAfterMs": N}, SSE `retry: N`), so that the '
        "clients of a stopping instance do not all come back at the same moment.",
    )
    drain_timeout_s: float = Field(
        2.0,
        ge=0,
        le=60,
        description="How long the drain waits for live clients to go before the server stops anyway "
        "(uvicorn's own graceful timeout follows).",
    )

    @model_validator(mode="after")
    def _known_boards(self) -> BroadcasterSettings:
        try:  # a catalog that does not load stops the start, with its message
            catalog = BoardCatalog.load(self.boards_file)
        except OSError as exc:
            raise ValueError(f"LEADERBOARD_BOARDS_FILE: {exc}") from None
        if "boards" in self.model_fields_set:
            missing = [b for b in self.boards if catalog.get(b) is None]
            if missing:
                raise ValueError(
                    f"LEADERBOARD_BOARDS names {', '.join(map(repr, missing))}, which the board catalog "
                    "does not define (LEADERBOARD_BOARDS_FILE)"
                )
        return self

    def served_boards(self) -> list[str] | None:
        """The ``boards`` setting when it was given (a filter on the catalog), else None: all of it."""
        return self.boards if "boards" in self.model_fields_set else None

    @model_validator(mode="after")
    def _require_origins(self) -> BroadcasterSettings:
        # Cross-site WebSocket hijacking: browsers let any page open a socket to any host, so outside
        # dev mode the deployment must say which pages may (an explicit '["*"]' is a deliberate choice).
        if self.ws_allowed_origins is None and not self.dev_mode:
            raise ValueError(
                "LEADERBOARD_WS_ALLOWED_ORIGINS must be set outside dev mode: a JSON list of the origins "
                "whose pages may open /ws/leaderboard, e.g. '[\"https://www.example.com\"]', or '[]' for "
                "the broadcaster's own page only, or '[\"*\"]' to allow any origin deliberately"
            )
        return self
