-- pgleap state, version 3: where streaming changes starts.

-- The publication and the permanent logical slot a following migration streams from. The
-- names are recorded before either is created, so that a crash between the two leaves
-- nothing on the source that the next run does not know to reuse or drop. start_lsn is the
-- slot's consistent point: the rows copied at its snapshot are the database at that LSN, and
-- streaming starts there.
CREATE TABLE pgleap.replication (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  slot_name text NOT NULL CHECK (slot_name ~ '^[a-z0-9_]{1,63}$'),
  publication_name text NOT NULL CHECK (publication_name ~ '^[a-z0-9_]{1,63}$'),
  start_lsn pg_lsn,  -- NULL until the slot exists
  created_at timestamptz NOT NULL DEFAULT now()
);
