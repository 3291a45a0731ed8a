-- Drift detection: each stack's own schedule and remediation, its drift state, the history of
-- its checks, and the outbox of notifications still to deliver.

ALTER TABLE stacks ADD COLUMN drift_schedule TEXT;
ALTER TABLE stacks ADD COLUMN drift_remediation TEXT NOT NULL DEFAULT 'none'
    CHECK (drift_remediation IN ('none', 'plan', 'apply'));

-- The last schedule tick a drift check of each stack was queued for, across instances: the
-- first instance to move it forward queues the check (a row lock settles a race).
CREATE TABLE drift_ticks (
    repo_id         INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    stack_path      TEXT NOT NULL,
    tick            TEXT NOT NULL,
    PRIMARY KEY (repo_id, stack_path)
);

-- One row per stack that was ever checked. `record` is the engine's whole drift record (JSON);
-- the other columns repeat what people and queries ask for.
CREATE TABLE drift_states (
    repo_id         INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    stack_path      TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('in_sync', 'drifted', 'error')),
    fingerprint     TEXT,
    resources       TEXT NOT NULL,
    cause           TEXT,
    since           TEXT NOT NULL,
    first_seen      TEXT,
    last_seen       TEXT,
    checked_at      TEXT NOT NULL,
    last_check_run  INTEGER REFERENCES runs(id) ON DELETE SET NULL,
    error           TEXT,
    record          TEXT NOT NULL,
    PRIMARY KEY (repo_id, stack_path)
);

CREATE TABLE drift_checks (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    repo_id         INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    stack_path      TEXT NOT NULL,
    run_id          INTEGER REFERENCES runs(id) ON DELETE SET NULL,
    commit_sha      TEXT NOT NULL,
    result          TEXT NOT NULL CHECK (result IN ('in_sync', 'drifted', 'error')),
    fingerprint     TEXT,
    cause           TEXT,
    error           TEXT,
    notified        TEXT,
    checked_at      TEXT NOT NULL
);
CREATE INDEX drift_checks_stack ON drift_checks (repo_id, stack_path, id);

-- Messages to deliver. A sender claims a due row by setting `claimed_by` and a lease, sends,
-- and records the outcome; a row whose sender died is claimed again once its lease expires.
CREATE TABLE notification_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    repo_id         INTEGER REFERENCES repos(id) ON DELETE CASCADE,
    stack_path      TEXT,
    run_id          INTEGER REFERENCES runs(id) ON DELETE SET NULL,
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    failed_sends    INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    sent_at         TEXT,
    claimed_by      TEXT,
    lease_expires_at TEXT
);
CREATE INDEX notification_outbox_due ON notification_outbox (status, next_attempt_at);
