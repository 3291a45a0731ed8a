-- What the stacks page needs to read per stack, whatever the size of each plan and the
-- length of the history: a run's number of resource changes (add + change + destroy +
-- replace, from its summary) in a column of its own, and an index that finds each stack's
-- latest branch run of a kind by one seek.
ALTER TABLE runs ADD COLUMN changes INTEGER;
UPDATE runs SET changes =
    COALESCE(json_extract(summary, '$.summary.add'), 0)
  + COALESCE(json_extract(summary, '$.summary.change'), 0)
  + COALESCE(json_extract(summary, '$.summary.destroy'), 0)
  + COALESCE(json_extract(summary, '$.summary.replace'), 0)
WHERE summary IS NOT NULL AND json_valid(summary) AND json_type(summary, '$.summary') = 'object';
CREATE INDEX runs_latest ON runs (repo_id, stack_path, kind, id) WHERE pr_number IS NULL;
