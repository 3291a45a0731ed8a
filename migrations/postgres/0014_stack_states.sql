-- What the stacks page needs to read per stack, whatever the size of each plan and the
-- length of the history: a run's number of resource changes (add + change + destroy +
-- replace, from its summary) in a column of its own, and an index that finds each stack's
-- latest branch run of a kind by one seek.
ALTER TABLE runs ADD COLUMN changes BIGINT;
-- PostgreSQL refuses to read a JSON text holding the escape \u0000 anywhere, so the rows
-- that hold one (if any) are read one by one below, each one's failure its own (it leaves
-- that run's count empty: the run then shows no pending changes).
UPDATE runs SET changes =
    COALESCE((summary::json #>> '{summary,add}')::bigint, 0)
  + COALESCE((summary::json #>> '{summary,change}')::bigint, 0)
  + COALESCE((summary::json #>> '{summary,destroy}')::bigint, 0)
  + COALESCE((summary::json #>> '{summary,replace}')::bigint, 0)
WHERE summary IS NOT NULL AND strpos(summary, '\u0000') = 0
  AND json_typeof(summary::json -> 'summary') = 'object';
DO $$
DECLARE
    r RECORD;
    j json;
BEGIN
    FOR r IN SELECT id, summary FROM runs WHERE summary IS NOT NULL AND strpos(summary, '\u0000') > 0 LOOP
        BEGIN
            BEGIN
                j := r.summary::json -> 'summary';
            EXCEPTION WHEN others THEN
                -- The counts hold no text: without its NUL escapes the summary reads the same.
                j := replace(r.summary, '\u0000', '')::json -> 'summary';
            END;
            UPDATE runs SET changes = COALESCE((j ->> 'add')::bigint, 0)
                + COALESCE((j ->> 'change')::bigint, 0) + COALESCE((j ->> 'destroy')::bigint, 0)
                + COALESCE((j ->> 'replace')::bigint, 0)
            WHERE id = r.id AND json_typeof(j) = 'object';
        EXCEPTION WHEN others THEN
            NULL;
        END;
    END LOOP;
END
$$;
CREATE INDEX runs_latest ON runs (repo_id, stack_path, kind, id) WHERE pr_number IS NULL;
