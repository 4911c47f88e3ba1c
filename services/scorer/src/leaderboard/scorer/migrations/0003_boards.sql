-- Boards as a domain concept (issue 10): one entry per board, period and user, whatever the board's
-- rule (sum | best | latest) and window. `users` stays the user registry (username) and seed 000's
-- all-time sum; every board of the catalog, `global` included, is kept here.
CREATE TABLE IF NOT EXISTS board_entries (
    board       text        NOT NULL,
    period      text        NOT NULL,          -- 'all', '2026-11-23', '2026-W47', '2026-11' or a season id
    user_id     uuid        NOT NULL,
    score       bigint      NOT NULL CHECK (score >= 0),
    rank_key    bigint      NOT NULL,          -- -score on a desc board, score on an asc board
    reached_at  timestamptz NOT NULL,          -- acceptedAt of the event that set this score
    action_id   uuid,                          -- that event (sum: the latest one); NULL if carried over
    metadata    jsonb,                         -- that event's metadata (sum: the newest sent)
    updated_at  timestamptz NOT NULL DEFAULT now(),
    version     bigint      NOT NULL DEFAULT 1, -- bumps on every change; Redis applies only newer versions
    PRIMARY KEY (board, period, user_id)
);
-- The board order for either order: ORDER BY rank_key, reached_at, user_id.
CREATE INDEX IF NOT EXISTS board_entries_rank_idx ON board_entries (board, period, rank_key, reached_at, user_id);

-- The global board as it stood (the default catalog's `global` is the sum over all time, as `users`).
INSERT INTO board_entries (board, period, user_id, score, rank_key, reached_at, action_id, updated_at, version)
SELECT 'global', 'all', user_id, score, -score, reached_at, NULL, updated_at, version FROM users
ON CONFLICT DO NOTHING;

-- One row per board and period: each period of a board has its own epoch and versions.
ALTER TABLE boards ADD COLUMN period text NOT NULL DEFAULT 'all';
ALTER TABLE boards ADD COLUMN starts_at timestamptz;
ALTER TABLE boards ADD COLUMN resets_at timestamptz;
ALTER TABLE boards DROP CONSTRAINT boards_pkey;
ALTER TABLE boards ADD PRIMARY KEY (board, period);
