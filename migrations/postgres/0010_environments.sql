-- Stack instances: a stack with `environment` blocks is recorded once per environment, its
-- path `DIR@ENV`; a stack without them keeps its path and a NULL environment, so every run,
-- state version and drift record written before this migration stays with its stack as the
-- default instance.
ALTER TABLE stacks ADD COLUMN environment TEXT;
