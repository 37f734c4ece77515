-- pgleap state, version 5: what pgleap status and the status page show besides progress.

-- The bytes each copy unit read from the source, for the per-table progress.
ALTER TABLE pgleap.copy_item ADD COLUMN bytes_copied bigint CHECK (bytes_copied >= 0);

-- Problems a running pgleap logged (lost connections, apply errors, alerts), so that
-- pgleap status shows the recent ones from any machine that reaches the target. pgleap
-- keeps the newest few hundred.
CREATE TABLE pgleap.event (
  id bigserial PRIMARY KEY,
  at timestamptz NOT NULL,
  level text NOT NULL CHECK (level IN ('warn', 'error')),
  message text NOT NULL,
  attrs jsonb NOT NULL DEFAULT '{}'
);
