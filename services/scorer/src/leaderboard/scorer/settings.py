"""Scorer settings (env prefix ``LEADERBOARD_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from leaderboard.common.boardkeys import DEFAULT_BOARD
from leaderboard.common.settings import CommonSettings

FaultPoint = Literal["after_fetch", "after_postgres", "after_redis", "before_commit"]


class ScorerSettings(CommonSettings):
    scorer_group: str = "leaderboard-scorer"
    scorer_web_port: int = 6066
    scorer_web_host: str = "127.0.0.1"
    batch_size: int = Field(2000, ge=1)
    # How long a batch waits for more records before it is applied (unless batch_size arrive first).
    # Records that arrive while a batch is applied are buffered meanwhile, so batches grow with the
    # load on their own and the window only adds delay (issue 12's end-to-end profile: 50 ms -> 5 ms).
    batch_within_s: float = Field(0.005, gt=0)
    # Under heavy load the agent rests after a batch until about BATCH_FILL_TARGET records are due,
    # if they are due within BATCH_MAX_WAIT_S (domain.BatchPacer): fewer, larger batches exactly when
    # their fixed cost would take the machine from ingest; a light load keeps the 5 ms window.
    batch_fill_target: int = Field(32, ge=1)
    batch_max_wait_s: float = Field(0.05, ge=0)
    # The scorer's Kafka fetch wait. The embedded broker (Tansu) holds a fetch for about half of it
    # even when records arrive meanwhile, so it bounds the delay before the scorer sees a record;
    # real Kafka answers as soon as a record arrives, so there it only sets how often an idle
    # scorer polls (compose and the Kubernetes config raise it to 100 ms).
    scorer_fetch_max_wait_ms: int = Field(10, ge=1, le=1_500)
    session_timeout_s: float = Field(10, ge=2, description="How fast a dead member's partitions move on.")
    commit_interval_s: float = 1.0
    # Faust's local state (LEADERBOARD_SCORER_DATADIR); the scorer keeps no tables in it.
    scorer_datadir: Path = Path(".leaderboard/scorer-data")
    # The board whose version the scorer_board_version gauge shows and that ``Projector.rebuild()``
    # builds by default; every board of the catalog (LEADERBOARD_BOARDS_FILE) is projected.
    board: str = DEFAULT_BOARD
    # How often the worker checks whether a windowed board's period has rolled over (a cheap clock
    # comparison; Redis and Kafka are touched only when a period changes).
    rollover_check_s: float = Field(1.0, gt=0, le=60)
    # Test hook: the scorer's clock runs this many seconds ahead of (or, negative, behind) the system
    # clock. It decides which period is current (rollover, announcements, Redis expiry); never which
    # period an event feeds (that is its acceptedAt). Leave it at 0 outside tests.
    clock_offset_s: float = 0.0
    # Anti-abuse: per user and action type, at most N applied events within W seconds of acceptedAt
    # (the log's time, so a replay quarantines the same events). JSON in the environment, e.g.
    # LEADERBOARD_VELOCITY_CAPS='{"quest": [20, 60]}'. Types not listed are uncapped.
    velocity_caps: dict[str, tuple[int, float]] = Field(default_factory=dict)
    # Game-backend (source "service") events also get the catalog's per_hour cap per user and type,
    # over the hour before each acceptedAt; excess is quarantined and audited like the caps above.
    # "off" drops these derived caps (trusted backends, load tests); LEADERBOARD_VELOCITY_CAPS still apply.
    service_caps: Literal["catalog", "off"] = "catalog"
    # /readyz says 503 (and scorer_stalled is 1) while a batch fails and is retried, or has been in
    # flight for longer than this (a hung store).
    stall_after_s: float = Field(15.0, gt=0)
    # The Postgres schema the projection lives in (LEADERBOARD_POSTGRES_SCHEMA): unset, the connection's
    # default (public). ``leaderboard replay --into NAME`` rebuilds into schema NAME side by side.
    postgres_schema: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    # A running scorer holds a Redis lease ({prefix}:scorer:lease:{host}:{pid}) for this many seconds,
    # renewed every third of it, so that ``leaderboard replay`` into the live stores can refuse to run
    # beside it (any broker: no consumer-group API needed). A stopped scorer releases it at once; a
    # killed one after this long.
    scorer_lease_s: float = Field(6.0, ge=1, le=300)
    # Fault injection for tests: exit hard (os._exit(70)) once at this point of the batch that follows
    # ``fault_after_batches`` completed ones, when the marker file is absent (it is written first).
    fault_point: FaultPoint | None = None
    fault_marker: Path | None = None
    fault_after_batches: int = Field(0, ge=0)

    @field_validator("velocity_caps")
    @classmethod
    def _sane_caps(cls, caps: dict[str, tuple[int, float]]) -> dict[str, tuple[int, float]]:
        for action_type, (max_events, window_s) in caps.items():
            if max_events < 1 or window_s <= 0:
                raise ValueError(f"velocity cap for {action_type!r} needs max_events >= 1 and window > 0")
        return caps
