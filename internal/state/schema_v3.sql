-- pgleap state, version 3: streaming changes.

-- The publication and the permanent logical slot a following migration streams from. The
-- names are recorded before either is created, so that a crash between the two leaves
-- nothing on the source that the next run does not know to reuse or drop. start_lsn is the
-- slot's consistent point: the rows copied at its snapshot are the database at that LSN, and
-- streaming starts there.
--
-- applied_lsn is the end of the last source transaction applied on the target. It is
-- updated in the same target transaction as that source transaction's changes, so after
-- any crash the target says exactly where to resume: nothing is applied twice or skipped.
CREATE TABLE pgleap.replication (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  slot_name text NOT NULL CHECK (slot_name ~ '^[a-z0-9_]{1,63}$'),
  publication_name text NOT NULL CHECK (publication_name ~ '^[a-z0-9_]{1,63}$'),
  start_lsn pg_lsn,                 -- NULL until the slot exists
  applied_lsn pg_lsn,               -- NULL until the first transaction is applied
  applied_commit_time timestamptz,  -- the source commit time of that transaction
  applied_at timestamptz,           -- when it was applied
  -- The target database is read-only for every session but pgleap's until cutover.
  target_guard boolean NOT NULL DEFAULT false,
  applied_transactions bigint NOT NULL DEFAULT 0,  -- source transactions applied, ever
  applied_changes bigint NOT NULL DEFAULT 0,       -- and their row changes
  created_at timestamptz NOT NULL DEFAULT now(),
  CHECK (applied_lsn IS NULL OR applied_lsn >= start_lsn)
);

-- Where the migration stands, for pgleap status: schema, copying (rows), indexing (the rows
-- are in, post-data still builds), copied (a cold copy is complete), streaming.
ALTER TABLE pgleap.migration ADD COLUMN phase text NOT NULL DEFAULT 'schema'
  CHECK (phase IN ('schema', 'copying', 'indexing', 'copied', 'streaming'));
ALTER TABLE pgleap.migration ADD COLUMN phase_since timestamptz NOT NULL DEFAULT now();
