-- pgleap state, version 2: the data copy.

-- One row per unit of copy work: a whole table (chunk 0 of 1) or one range of a split
-- table. A unit's rows and its finished_at commit in the same target transaction, so a
-- unit is either entirely on the target and finished, or not there at all.
CREATE TABLE pgleap.copy_item (
  table_schema text NOT NULL,
  table_name text NOT NULL,
  chunk integer NOT NULL CHECK (chunk >= 0),
  chunks integer NOT NULL CHECK (chunks >= 1 AND chunk < chunks),
  split_by text NOT NULL CHECK (split_by IN ('none', 'key', 'ctid')),
  key_column text,                -- for split_by = 'key'
  lower_bound bigint,             -- inclusive; NULL: unbounded
  upper_bound bigint,             -- exclusive; NULL: unbounded
  estimated_bytes bigint NOT NULL,
  rows_copied bigint,
  sync_lsn pg_lsn,                -- the snapshot the rows were read at
  finished_at timestamptz,
  PRIMARY KEY (table_schema, table_name, chunk),
  CHECK ((finished_at IS NULL) = (sync_lsn IS NULL)),
  CHECK (split_by <> 'key' OR key_column IS NOT NULL)
);
