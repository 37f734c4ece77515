-- pgleap state, version 4: verification.

-- pgleap verify compares the source at the snapshot of a temporary slot with the target at
-- exactly the same point. It first asks the apply to stop where it is (hold_lsn 0/0: at the
-- next boundary between source transactions), so that it cannot pass the slot about to be
-- made; then asks it to go on up to the slot's consistent point (hold_lsn; source
-- transactions that committed before it are in the snapshot, the others are not). Once every
-- transaction before hold_lsn is applied and none after it, the apply sets held_at and waits;
-- were it past hold_lsn already, it sets hold_missed and goes on, and verify tries again.
-- verify takes a snapshot of the target, then clears hold_lsn, which lets the apply go on.
ALTER TABLE pgleap.replication ADD COLUMN hold_lsn pg_lsn;
ALTER TABLE pgleap.replication ADD COLUMN held_at timestamptz;
ALTER TABLE pgleap.replication ADD COLUMN hold_missed boolean NOT NULL DEFAULT false;
ALTER TABLE pgleap.replication ADD CHECK (hold_lsn IS NOT NULL OR (held_at IS NULL AND NOT hold_missed));
ALTER TABLE pgleap.replication ADD CHECK (held_at IS NULL OR NOT hold_missed);

-- The outcome of each row verification, for pgleap status and cutover.
CREATE TABLE pgleap.verification (
  id bigserial PRIMARY KEY,
  started_at timestamptz NOT NULL,
  finished_at timestamptz NOT NULL DEFAULT now(),
  source_lsn pg_lsn,                -- the source snapshot compared; NULL without one
  equal boolean NOT NULL,
  tables integer NOT NULL CHECK (tables >= 0),
  differing_tables integer NOT NULL CHECK (differing_tables BETWEEN 0 AND tables),
  rows_compared bigint NOT NULL CHECK (rows_compared >= 0),
  apply_pause_ms double precision,  -- how long the apply stood still for it
  report jsonb NOT NULL             -- the whole report, as pgleap verify --json prints it
);

-- Cutover. Each run of pgleap cutover is recorded before it changes anything: a run that
-- dies with the source frozen leaves here what the next one must undo (freeze_undo: the settings
-- the freeze changed, as they were). timeline lists each step with its start and end;
-- write_pause_ms is how long the source took no writes.
CREATE TABLE pgleap.cutover (
  id bigserial PRIMARY KEY,
  started_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  outcome text CHECK (outcome IN ('done', 'undone')),  -- NULL while it runs
  freeze_undo jsonb,
  timeline jsonb NOT NULL DEFAULT '[]',
  write_pause_ms double precision,
  reason text,                                          -- why it was undone
  CHECK ((finished_at IS NULL) = (outcome IS NULL))
);
CREATE UNIQUE INDEX cutover_one_running ON pgleap.cutover ((true)) WHERE finished_at IS NULL;

-- The way back: a cutover that streams the new server's changes to the old one creates a
-- publication and a slot on the target (this server) before it takes its first write; the
-- old server gets a pgleap schema of its own, which follows this one as this one followed it.
ALTER TABLE pgleap.replication ADD COLUMN reverse_slot text CHECK (reverse_slot ~ '^[a-z0-9_]{1,63}$');
ALTER TABLE pgleap.replication ADD COLUMN reverse_publication text CHECK (reverse_publication ~ '^[a-z0-9_]{1,63}$');

-- Phases after streaming: cutover (pgleap cutover runs), cutover-done (the target took the
-- writes, nothing goes back), reverse-streaming (the target took the writes and the old
-- server follows it), rolled-back (pgleap rollback gave the writes back to the old server).
ALTER TABLE pgleap.migration DROP CONSTRAINT migration_phase_check;
ALTER TABLE pgleap.migration ADD CONSTRAINT migration_phase_check
  CHECK (phase IN ('schema', 'copying', 'indexing', 'copied', 'streaming', 'cutover', 'cutover-done', 'reverse-streaming', 'rolled-back'));
