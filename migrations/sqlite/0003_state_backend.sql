-- Tidemark as the Terraform state backend: every state version keeps the whole state
-- (encrypted with the instance key), the addresses of its managed resources, and whether a
-- DELETE retired it; per-stack state locks (the http backend's LOCK/UNLOCK); per-run
-- credentials, scoped to one repository and stack, stored hashed.

ALTER TABLE state_versions ADD COLUMN state_encrypted BLOB;
ALTER TABLE state_versions ADD COLUMN resources TEXT NOT NULL DEFAULT '[]';
ALTER TABLE state_versions ADD COLUMN discarded_at TEXT;

CREATE TABLE state_locks (
    repo_id         INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    stack_path      TEXT NOT NULL,
    lock_id         TEXT NOT NULL,
    info            TEXT NOT NULL,
    run_id          INTEGER REFERENCES runs(id) ON DELETE SET NULL,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (repo_id, stack_path)
);

CREATE TABLE state_credentials (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    username        TEXT NOT NULL UNIQUE,
    password_sha256 TEXT NOT NULL,
    run_id          INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    repo_id         INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    stack_path      TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    revoked_at      TEXT
);
CREATE INDEX state_credentials_run ON state_credentials (run_id);
