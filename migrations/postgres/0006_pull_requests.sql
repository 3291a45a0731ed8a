-- Pull requests Tidemark follows on a forge, and the runs it queued for them. A PR's runs are
-- ordinary plan and apply runs (one queue, one lock per stack) with `pr_number` set.

CREATE TABLE pull_requests (
    repo_id         BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    number          BIGINT NOT NULL,
    title           TEXT NOT NULL,
    author          TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('open', 'closed', 'merged')),
    draft           BOOLEAN NOT NULL DEFAULT FALSE,
    fork            BOOLEAN NOT NULL DEFAULT FALSE,
    labels          TEXT NOT NULL DEFAULT '[]',
    head_sha        TEXT NOT NULL,
    base_ref        TEXT NOT NULL,
    base_sha        TEXT NOT NULL,
    -- What the last queued plans were made from: the PR head, the merge base the affected set
    -- was computed against, and the commit the plans ran on (the head merged into the base, or
    -- the head itself).
    planned_head    TEXT,
    merge_base      TEXT,
    planned_commit  TEXT,
    -- Why the last head was not planned (a fork, a merge conflict), for the comment.
    skipped         TEXT,
    merge_commit_sha TEXT,
    -- Approving reviews that count (JSON: login, permission, commit), as last read.
    approvals       TEXT NOT NULL DEFAULT '[]',
    -- What the merge did per stack (JSON: stack -> text), for the comment.
    merge_result    TEXT NOT NULL DEFAULT '{}',
    -- When the merge was handled (applies queued or refused), so it is handled once.
    merge_handled_at TIMESTAMPTZ,
    comment_id      BIGINT,
    comment_sha256  TEXT,
    -- The last status sent per context, as `context=state:sha` lines, so unchanged ones are not resent.
    statuses        TEXT NOT NULL DEFAULT '',
    updated_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (repo_id, number)
);

ALTER TABLE runs ADD COLUMN pr_number BIGINT;
-- For a plan queued because a merge changed the stack's inputs since its review: the plan
-- run that was reviewed (its change set must be the same for the new plan to be applied).
ALTER TABLE runs ADD COLUMN reviewed_run_id BIGINT REFERENCES runs(id) ON DELETE SET NULL;
CREATE INDEX runs_pr ON runs (repo_id, pr_number, id);
