-- Seed 000's tables, extended (SPEC section 4).
CREATE TABLE IF NOT EXISTS users (
    user_id     uuid PRIMARY KEY,
    username    text        NOT NULL,
    score       bigint      NOT NULL DEFAULT 0 CHECK (score >= 0),
    reached_at  timestamptz NOT NULL,          -- acceptedAt of the event that brought the user to this score
    updated_at  timestamptz NOT NULL DEFAULT now(),
    version     bigint      NOT NULL DEFAULT 0  -- bumps on every change; Redis applies only newer versions
);
-- The board order, the same as the Redis key: score desc, reached_at asc, user_id asc.
CREATE INDEX IF NOT EXISTS users_rank_idx ON users (score DESC, reached_at ASC, user_id ASC);

CREATE TABLE IF NOT EXISTS actions (
    action_id       uuid PRIMARY KEY,          -- the idempotency key: a redelivered event inserts nothing
    event_id        uuid        NOT NULL,
    user_id         uuid        NOT NULL REFERENCES users (user_id) DEFERRABLE INITIALLY DEFERRED,
    action_type     text        NOT NULL,
    points          integer     NOT NULL CHECK (points > 0),
    source          text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    accepted_at     timestamptz NOT NULL,
    applied_at      timestamptz NOT NULL DEFAULT now(),
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_user_idx ON actions (user_id, accepted_at);

-- One row per board: the epoch names this incarnation of the Redis board (a rebuild starts a new one);
-- version is the last published BoardChanged version, so versions keep rising across restarts.
CREATE TABLE IF NOT EXISTS boards (
    board      text PRIMARY KEY,
    epoch      text        NOT NULL,
    version    bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
