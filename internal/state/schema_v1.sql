-- pgleap state, version 1. Applied once per target database, in one transaction.
CREATE SCHEMA pgleap;
COMMENT ON SCHEMA pgleap IS 'pgleap migration state: drop it with pgleap cleanup, not by hand';

CREATE TABLE pgleap.state_version (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  version integer NOT NULL CHECK (version > 0),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- The migration this target receives: one source database, one table selection.
CREATE TABLE pgleap.migration (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  source_database text NOT NULL,
  source_major integer NOT NULL,
  include_patterns text[] NOT NULL DEFAULT '{}',
  exclude_patterns text[] NOT NULL DEFAULT '{}',
  started_at timestamptz NOT NULL DEFAULT now()
);

-- The schema archive (pg_dump -Fc --schema-only) every schema step works from, kept so that
-- a resumed run restores the very same objects with the very same dump IDs.
CREATE TABLE pgleap.schema_archive (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  archive bytea NOT NULL,
  dumped_by text NOT NULL,
  dumped_at timestamptz NOT NULL DEFAULT now()
);

-- Steps done, each recorded in the transaction that did it.
CREATE TABLE pgleap.step (
  id text PRIMARY KEY CHECK (id <> ''),
  finished_at timestamptz NOT NULL DEFAULT now()
);

-- Objects left out of the target because they depend on excluded tables.
CREATE TABLE pgleap.skipped_object (
  kind text NOT NULL,
  name text NOT NULL,
  reason text NOT NULL,
  PRIMARY KEY (kind, name)
);
