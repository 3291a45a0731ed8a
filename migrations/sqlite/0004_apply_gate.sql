-- The apply gate: stack settings the gate reads, policy verdicts per plan run, approvals and
-- overrides bound to a plan digest, the gate's decision recorded on each apply run, and the
-- state serial each plan was made against.

ALTER TABLE stacks ADD COLUMN auto_apply INTEGER NOT NULL DEFAULT 0;
ALTER TABLE stacks ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';

ALTER TABLE runs ADD COLUMN gate TEXT;
ALTER TABLE runs ADD COLUMN transitive INTEGER NOT NULL DEFAULT 0;

ALTER TABLE plan_artifacts ADD COLUMN state_serial INTEGER;
ALTER TABLE plan_artifacts ADD COLUMN state_lineage TEXT;

CREATE TABLE verdicts (
    run_id          INTEGER PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    plan_digest     TEXT NOT NULL,
    passed          INTEGER NOT NULL,
    blocking        TEXT NOT NULL CHECK (blocking IN ('none', 'soft', 'hard')),
    verdict         TEXT NOT NULL,
    created_at      TEXT NOT NULL
);

CREATE TABLE approvals (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    plan_digest     TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('approve', 'override')),
    actor           TEXT NOT NULL,
    reason          TEXT,
    created_at      TEXT NOT NULL
);
CREATE INDEX approvals_run ON approvals (run_id, kind);
