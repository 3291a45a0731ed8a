-- Tidemark as the Terraform state backend: every state version keeps the whole state
-- (encrypted with the instance key), the addresses of its managed resources, and whether a
-- DELETE retired it; per-stack state locks (the http backend's LOCK/UNLOCK); per-run
-- credentials, scoped to one repository and stack, stored hashed.

ALTER TABLE state_versions ADD COLUMN state_encrypted BYTEA;
ALTER TABLE state_versions ADD COLUMN resources TEXT NOT NULL DEFAULT '[]';
ALTER TABLE state_versions ADD COLUMN discarded_at TIMESTAMPTZ;

CREATE TABLE state_locks (
    repo_id         BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    stack_path      TEXT NOT NULL,
    lock_id         TEXT NOT NULL,
    info            TEXT NOT NULL,
    run_id          BIGINT REFERENCES runs(id) ON DELETE SET NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (repo_id, stack_path)
);

CREATE TABLE state_credentials (
    id              BIGSERIAL PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE,
    password_sha256 TEXT NOT NULL,
    run_id          BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    repo_id         BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    stack_path      TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ NOT NULL,
    revoked_at      TIMESTAMPTZ
);
CREATE INDEX state_credentials_run ON state_credentials (run_id);
