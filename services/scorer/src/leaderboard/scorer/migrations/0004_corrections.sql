-- Corrections as events (issue 11): a voided action stays, marked; the boards are recomputed without it.
ALTER TABLE actions ADD COLUMN voided_at timestamptz;       -- the correction's `at` (NULL: it counts)
ALTER TABLE actions ADD COLUMN void_reason text;
ALTER TABLE actions ADD COLUMN voided_by text;             -- the admin's subject
ALTER TABLE actions ADD COLUMN void_correction_id uuid;    -- the correction that voided it
-- The entry metadata of the event (issue 10), so that a recompute after a void keeps it.
ALTER TABLE actions ADD COLUMN metadata jsonb;
-- A rename is an admin's decision: later actions carrying the old name do not undo it.
ALTER TABLE users ADD COLUMN renamed_at timestamptz;

-- Every correction applied, in log order: the idempotency key (a redelivered correction applies once)
-- and the history readers of the past fold (``leaderboard.common.history.voided_at``).
CREATE TABLE IF NOT EXISTS corrections (
    correction_id   uuid PRIMARY KEY,
    event_type      text        NOT NULL,   -- ActionVoided | UserActionsVoided | UserActionsRestored | UserRenamed
    user_id         uuid        NOT NULL,
    action_id       uuid,                   -- ActionVoided, or a restore of one action
    username        text,                   -- UserRenamed
    reason          text        NOT NULL,
    by              text        NOT NULL,
    at              timestamptz NOT NULL,
    affected        integer     NOT NULL DEFAULT 0,  -- actions it voided or restored
    applied_at      timestamptz NOT NULL DEFAULT now(),
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS corrections_user_idx ON corrections (user_id, kafka_partition, kafka_offset);
CREATE INDEX IF NOT EXISTS corrections_at_idx ON corrections (at);
CREATE INDEX IF NOT EXISTS actions_accepted_idx ON actions (accepted_at);
