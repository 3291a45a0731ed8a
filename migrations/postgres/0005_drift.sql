-- Drift detection: each stack's own schedule and remediation, its drift state, the history of
-- its checks, and the outbox of notifications still to deliver.

ALTER TABLE stacks ADD COLUMN drift_schedule TEXT;
ALTER TABLE stacks ADD COLUMN drift_remediation TEXT NOT NULL DEFAULT 'none'
    CHECK (drift_remediation IN ('none', 'plan', 'apply'));

-- The last schedule tick a drift check of each stack was queued for, across instances: the
-- first instance to move it forward queues the check (a row lock settles a race).
CREATE TABLE drift_ticks (
    repo_id         BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    stack_path      TEXT NOT NULL,
    tick            TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (repo_id, stack_path)
);

-- One row per stack that was ever checked. `record` is the engine's whole drift record (JSON);
-- the other columns repeat what people and queries ask for.
CREATE TABLE drift_states (
    repo_id         BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    stack_path      TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('in_sync', 'drifted', 'error')),
    fingerprint     TEXT,
    resources       TEXT NOT NULL,
    cause           TEXT,
    since           TIMESTAMPTZ NOT NULL,
    first_seen      TIMESTAMPTZ,
    last_seen       TIMESTAMPTZ,
    checked_at      TIMESTAMPTZ NOT NULL,
    last_check_run  BIGINT REFERENCES runs(id) ON DELETE SET NULL,
    error           TEXT,
    record          TEXT NOT NULL,
    PRIMARY KEY (repo_id, stack_path)
);

CREATE TABLE drift_checks (
    id              BIGSERIAL PRIMARY KEY,
    repo_id         BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    stack_path      TEXT NOT NULL,
    run_id          BIGINT REFERENCES runs(id) ON DELETE SET NULL,
    commit_sha      TEXT NOT NULL,
    result          TEXT NOT NULL CHECK (result IN ('in_sync', 'drifted', 'error')),
    fingerprint     TEXT,
    cause           TEXT,
    error           TEXT,
    notified        TEXT,
    checked_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX drift_checks_stack ON drift_checks (repo_id, stack_path, id);

-- Messages to deliver. A sender claims a due row by setting `claimed_by` and a lease, sends,
-- and records the outcome; a row whose sender died is claimed again once its lease expires.
CREATE TABLE notification_outbox (
    id              BIGSERIAL PRIMARY KEY,
    repo_id         BIGINT REFERENCES repos(id) ON DELETE CASCADE,
    stack_path      TEXT,
    run_id          BIGINT REFERENCES runs(id) ON DELETE SET NULL,
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    failed_sends    INTEGER NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error      TEXT,
    sent_at         TIMESTAMPTZ,
    claimed_by      TEXT,
    lease_expires_at TIMESTAMPTZ
);
CREATE INDEX notification_outbox_due ON notification_outbox (status, next_attempt_at);
