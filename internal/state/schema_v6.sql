-- pgleap state, version 6: the schema changes captured on the source (pgleap migrate --ddl)
-- that the apply ran on the target, or skipped. Written in the target transaction that runs
-- the change, so a change is run once, however often the stream is replayed.
CREATE TABLE pgleap.ddl (
  id bigint PRIMARY KEY CHECK (id > 0), -- pgleap_ddl.ddl_log's id on the source
  applied_at timestamptz NOT NULL DEFAULT now(),
  tag text NOT NULL,
  statement text NOT NULL,
  skipped text -- why it was not run, when it was not
);

-- How many schema changes the source had captured (pgleap migrate --ddl) when pg_dump read
-- its schema; NULL without the capture. One committed after that and before the slot's
-- snapshot would be in neither the schema nor the stream: the copy refuses to start then.
ALTER TABLE pgleap.schema_archive ADD COLUMN ddl_captured bigint;
