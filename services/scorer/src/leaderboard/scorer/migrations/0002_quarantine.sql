-- Anti-abuse: actions over a velocity cap are kept here instead of being applied. The primary key
-- makes quarantine idempotent like ``actions``: a redelivered quarantined event is neither applied
-- nor quarantined twice. audited_at is set once the audit event is on leaderboard.audit.v1.
CREATE TABLE IF NOT EXISTS quarantine (
    action_id       uuid PRIMARY KEY,
    event_id        uuid        NOT NULL,
    user_id         uuid        NOT NULL,
    username        text        NOT NULL,
    action_type     text        NOT NULL,
    points          integer     NOT NULL,
    source          text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    accepted_at     timestamptz NOT NULL,
    reason          text        NOT NULL,
    quarantined_at  timestamptz NOT NULL DEFAULT now(),
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    audited_at      timestamptz
);
CREATE INDEX IF NOT EXISTS quarantine_recent_idx ON quarantine (quarantined_at DESC);
CREATE INDEX IF NOT EXISTS quarantine_unaudited_idx ON quarantine (quarantined_at) WHERE audited_at IS NULL;
-- The velocity check reads a user's recent actions of one type.
CREATE INDEX IF NOT EXISTS actions_user_type_idx ON actions (user_id, action_type, accepted_at);
