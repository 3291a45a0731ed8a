-- Explicit stack locks (an interrupted apply leaves one until an operator unlocks the stack),
-- per-repository concurrency limits, and the plan an apply run applies.

CREATE TABLE stack_locks (
    repo_id         INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    stack_path      TEXT NOT NULL,
    run_id          INTEGER REFERENCES runs(id) ON DELETE SET NULL,
    reason          TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (repo_id, stack_path)
);

ALTER TABLE repos ADD COLUMN max_concurrency INTEGER;
ALTER TABLE runs ADD COLUMN plan_run_id INTEGER REFERENCES runs(id);
