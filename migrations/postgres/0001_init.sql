-- Tidemark's schema on PostgreSQL. JSON is text, as on SQLite, so both backends share one store API.

CREATE TABLE repos (
    id              BIGSERIAL PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    url             TEXT NOT NULL,
    branch          TEXT NOT NULL,
    last_fetch_at   TIMESTAMPTZ,
    last_error      TEXT,
    last_error_at   TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL
);

-- Every commit seen at the head of a tracked branch, and whether its runs were queued.
CREATE TABLE commits (
    id              BIGSERIAL PRIMARY KEY,
    repo_id         BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    branch          TEXT NOT NULL,
    sha             TEXT NOT NULL,
    parent_sha      TEXT,
    author          TEXT NOT NULL,
    message         TEXT NOT NULL,
    seen_at         TIMESTAMPTZ NOT NULL,
    processed_at    TIMESTAMPTZ,
    error           TEXT,
    UNIQUE (repo_id, branch, sha)
);

CREATE TABLE stacks (
    id              BIGSERIAL PRIMARY KEY,
    repo_id         BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    path            TEXT NOT NULL,
    name            TEXT NOT NULL,
    runner          TEXT,
    removed         BOOLEAN NOT NULL DEFAULT FALSE,
    last_commit     TEXT,
    updated_at      TIMESTAMPTZ NOT NULL,
    UNIQUE (repo_id, path)
);

CREATE TABLE runs (
    id              BIGSERIAL PRIMARY KEY,
    repo_id         BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    stack_path      TEXT NOT NULL,
    commit_sha      TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('plan', 'apply', 'drift')),
    status          TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted', 'superseded', 'timed_out')),
    reason          TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    started_at      TIMESTAMPTZ,
    finished_at     TIMESTAMPTZ,
    exit_code       INTEGER,
    error           TEXT,
    summary         TEXT,
    worker          TEXT,
    lease_expires_at TIMESTAMPTZ,
    attempt         INTEGER NOT NULL DEFAULT 0,
    priority        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_queue ON runs (status, priority, id);
CREATE INDEX runs_stack ON runs (repo_id, stack_path, id);

CREATE TABLE run_logs (
    id              BIGSERIAL PRIMARY KEY,
    run_id          BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step            TEXT NOT NULL,
    stream          TEXT NOT NULL,
    text            TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX run_logs_run ON run_logs (run_id, id);

-- The binary plan is encrypted before it reaches the store; the plan JSON is redacted.
CREATE TABLE plan_artifacts (
    run_id          BIGINT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    digest          TEXT NOT NULL,
    binding         TEXT NOT NULL,
    plan_encrypted  BYTEA NOT NULL,
    plan_json       BYTEA NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE state_versions (
    id              BIGSERIAL PRIMARY KEY,
    repo_id         BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    stack_path      TEXT NOT NULL,
    serial          BIGINT NOT NULL,
    lineage         TEXT NOT NULL,
    digest          TEXT NOT NULL,
    resource_count  BIGINT NOT NULL,
    outputs         TEXT NOT NULL,
    run_id          BIGINT REFERENCES runs(id) ON DELETE SET NULL,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX state_versions_stack ON state_versions (repo_id, stack_path, serial);

-- A run waits until each of its upstream runs has finished (dependency order within a commit).
CREATE TABLE run_deps (
    run_id          BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    upstream_id     BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    PRIMARY KEY (run_id, upstream_id)
);

-- The per-stack lock: at most one running run per stack, enforced by the database itself so
-- that two workers (or two instances) can never both hold it.
CREATE UNIQUE INDEX runs_one_running_per_stack ON runs (repo_id, stack_path) WHERE status = 'running';
