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
