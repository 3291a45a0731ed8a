-- The apply gate: stack settings the gate reads, policy verdicts per plan run, approvals and
-- overrides bound to a plan digest, the gate's decision recorded on each apply run, and the
-- state serial each plan was made against.

ALTER TABLE stacks ADD COLUMN auto_apply BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE stacks ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';

ALTER TABLE runs ADD COLUMN gate TEXT;
ALTER TABLE runs ADD COLUMN transitive BOOLEAN NOT NULL DEFAULT FALSE;

ALTER TABLE plan_artifacts ADD COLUMN state_serial BIGINT;
ALTER TABLE plan_artifacts ADD COLUMN state_lineage TEXT;

CREATE TABLE verdicts (
    run_id          BIGINT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    plan_digest     TEXT NOT NULL,
    passed          BOOLEAN NOT NULL,
    blocking        TEXT NOT NULL CHECK (blocking IN ('none', 'soft', 'hard')),
    verdict         TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE approvals (
    id              BIGSERIAL PRIMARY KEY,
    run_id          BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    plan_digest     TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('approve', 'override')),
    actor           TEXT NOT NULL,
    reason          TEXT,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX approvals_run ON approvals (run_id, kind);
