-- Delivery metrics: the commits each successful apply carried to its stack (from the stack's
-- previous successful apply's commit to this one's), with their committer time, so change lead
-- time is measured per commit, and whether the commit reverts another (a revert applied soon
-- after a deployment marks that deployment failed). An operator can mark an apply failed.
CREATE TABLE deployment_commits (
    run_id          INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    sha             TEXT NOT NULL,
    committed_at    TEXT NOT NULL,
    revert          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, sha)
);
ALTER TABLE runs ADD COLUMN marked_failed TEXT;
