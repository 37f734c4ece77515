package ddl

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/pg"
)

// Schema and Table name where captured commands are recorded on the source.
const (
	Schema = "pgleap_ddl"
	Table  = "ddl_log"
)

// captureSQL installs the capture. The recording function runs as its owner (a superuser:
// only one may create event triggers), so that nobody else may write the log pgleap runs
// on the target; it works only inside an event trigger (pg_event_trigger_ddl_commands and
// pg_event_trigger_dropped_objects refuse elsewhere), and reads the query and the role that
// ran the command (the session's, or the one it SET ROLE to) itself.
// Commands on pgleap's schemas, publications and event triggers are pgleap's own (the function's ALTER
// PUBLICATION fires the trigger again) or cannot be carried; temporary objects stay on the
// source. A new table joins every publication the log is in, in the same transaction, so
// its rows stream from its creation; a partition comes with its parent, but for 12, which
// publishes partitions, not parents. One without a primary key gets REPLICA IDENTITY FULL:
// published without an identity, it would refuse the application's updates and deletes.
const captureSQL = `
CREATE SCHEMA IF NOT EXISTS pgleap_ddl;
CREATE TABLE IF NOT EXISTS pgleap_ddl.ddl_log (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at timestamptz NOT NULL DEFAULT now(),
  tag text NOT NULL,
  objects text NOT NULL,
  query text NOT NULL,
  search_path text NOT NULL,
  role text NOT NULL,
  superuser boolean NOT NULL DEFAULT false
);
CREATE OR REPLACE FUNCTION pgleap_ddl.record(captured_event text, captured_tag text, caller_search_path text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $record$
DECLARE
  r record;
  caller name;
  objects text[] := '{}';
  new_tables oid[] := '{}';
  t oid;
  p name;
BEGIN
  IF captured_tag ~ '(PUBLICATION|SUBSCRIPTION|EVENT TRIGGER)$' OR current_setting('pgleap_ddl.recording', true) = 'on' THEN
    RETURN;
  END IF;
  IF captured_event = 'sql_drop' THEN
    IF captured_tag NOT LIKE 'DROP %' THEN
      RETURN; -- ALTER TABLE ... DROP COLUMN is recorded at its ddl_command_end
    END IF;
    FOR r IN SELECT * FROM pg_event_trigger_dropped_objects() WHERE original LOOP
      CONTINUE WHEN r.schema_name LIKE 'pg\_temp%' OR r.is_temporary OR coalesce(r.schema_name, r.object_identity) IN ('pgleap_ddl', 'pgleap');
      objects := objects || (r.object_type || E'\t' || coalesce(r.schema_name, '') || E'\t' || coalesce(r.object_identity, ''));
    END LOOP;
  ELSIF captured_tag LIKE 'DROP %' THEN
    RETURN; -- recorded at its sql_drop, with what it dropped
  ELSE
    FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
      CONTINUE WHEN r.schema_name LIKE 'pg\_temp%' OR r.in_extension OR coalesce(r.schema_name, r.object_identity) IN ('pgleap_ddl', 'pgleap');
      objects := objects || (r.object_type || E'\t' || coalesce(r.schema_name, '') || E'\t' || coalesce(r.object_identity, ''));
      -- An index or a trigger goes with its table: the statement names the table, and the
      -- selection is by table.
      IF r.object_type IN ('index', 'trigger') THEN
        objects := objects || (SELECT 'table' || E'\t' || n.nspname || E'\t' || c.oid::regclass::text
                               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                               WHERE c.oid = CASE WHEN r.object_type = 'index' THEN (SELECT indrelid FROM pg_index WHERE indexrelid = r.objid)
                                                  ELSE (SELECT tgrelid FROM pg_trigger WHERE oid = r.objid) END);
      END IF;
      IF r.object_type = 'table' AND r.command_tag IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO')
         AND (NOT (SELECT relispartition FROM pg_class WHERE oid = r.objid) OR current_setting('server_version_num')::int < 130000) THEN
        new_tables := new_tables || r.objid;
      END IF;
    END LOOP;
  END IF;
  IF cardinality(objects) = 0 THEN
    RETURN;
  END IF;
  caller := CASE WHEN current_setting('role') = 'none' THEN session_user ELSE current_setting('role') END;
  INSERT INTO pgleap_ddl.ddl_log (tag, objects, query, search_path, role, superuser)
  VALUES (captured_tag, array_to_string(objects, E'\n'), coalesce(current_query(), ''), caller_search_path, caller,
          coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = caller), false));
  PERFORM set_config('pgleap_ddl.recording', 'on', true); -- what follows is pgleap's own
  FOREACH t IN ARRAY new_tables LOOP
    -- Published without a key, the table would refuse its updates and deletes.
    IF (SELECT relreplident = 'd' AND relpersistence = 'p' AND relkind = 'r' FROM pg_class WHERE oid = t)
       AND NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = t AND contype = 'p') THEN
      EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', t::regclass);
    END IF;
    -- Unlogged tables cannot be published, nor partitioned ones on 12 (their partitions
    -- are, as they are created); a failure must not fail the application's command.
    CONTINUE WHEN (SELECT relpersistence <> 'p' OR (relkind = 'p' AND current_setting('server_version_num')::int < 130000)
                   FROM pg_class WHERE oid = t);
    FOR p IN SELECT pub.pubname FROM pg_publication pub JOIN pg_publication_rel pr ON pr.prpubid = pub.oid
             WHERE pr.prrelid = 'pgleap_ddl.ddl_log'::regclass LOOP
      BEGIN
        EXECUTE format('ALTER PUBLICATION %I ADD TABLE ONLY %s', p, t::regclass);
      EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pgleap: table % could not join publication %: %; its rows do not reach the target', t::regclass, p, SQLERRM;
      END;
    END LOOP;
  END LOOP;
  PERFORM set_config('pgleap_ddl.recording', '', true);
END
$record$;
-- The caller's search_path is read before the recording function's own replaces it.
CREATE OR REPLACE FUNCTION pgleap_ddl.capture() RETURNS event_trigger LANGUAGE plpgsql AS $capture$
BEGIN
  PERFORM pgleap_ddl.record(TG_EVENT, TG_TAG, pg_catalog.current_setting('search_path'));
END
$capture$;
GRANT USAGE ON SCHEMA pgleap_ddl TO PUBLIC;
DROP EVENT TRIGGER IF EXISTS pgleap_ddl_command_end;
DROP EVENT TRIGGER IF EXISTS pgleap_ddl_sql_drop;
CREATE EVENT TRIGGER pgleap_ddl_command_end ON ddl_command_end EXECUTE FUNCTION pgleap_ddl.capture();
CREATE EVENT TRIGGER pgleap_ddl_sql_drop ON sql_drop EXECUTE FUNCTION pgleap_ddl.capture();
`

// Install puts the capture on the source (again, if it is there). It needs a superuser.
func Install(ctx context.Context, source *pgx.Conn) error {
	if err := pgx.BeginFunc(ctx, source, func(tx pgx.Tx) error {
		// Event triggers do not fire in replica mode: installing again does not record itself.
		_, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica;"+captureSQL)
		return err
	}); err != nil {
		return fmt.Errorf("install the capture of schema changes on the source (pgleap migrate --ddl): %w: "+
			"only a superuser (or a managed service's admin role, such as rds_superuser) may create event triggers; "+
			"run pgleap as one, or leave --ddl out and freeze schema changes during the migration", err)
	}
	return nil
}

// queryer is a connection or a transaction.
type queryer interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}

// Installed reports whether the source holds the capture.
func Installed(ctx context.Context, source queryer) (bool, error) {
	var installed bool
	err := source.QueryRow(ctx, "SELECT to_regclass('pgleap_ddl.ddl_log') IS NOT NULL").Scan(&installed)
	if err != nil {
		return false, fmt.Errorf("look for the capture of schema changes on the source: %w", err)
	}
	return installed, nil
}

// Captured counts the schema changes the source's capture holds, nil when there is none.
func Captured(ctx context.Context, source queryer) (*int64, error) {
	installed, err := Installed(ctx, source)
	if err != nil || !installed {
		return nil, err
	}
	var captured int64
	if err := source.QueryRow(ctx, "SELECT count(*) FROM pgleap_ddl.ddl_log").Scan(&captured); err != nil {
		return nil, fmt.Errorf("count the schema changes captured on the source: %w", err)
	}
	return &captured, nil
}

// Uninstall removes the capture from the source; it reports whether there was one.
func Uninstall(ctx context.Context, source *pgx.Conn) (bool, error) {
	installed, err := Installed(ctx, source)
	if err != nil || !installed {
		return false, err
	}
	err = pgx.BeginFunc(ctx, source, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `DROP EVENT TRIGGER IF EXISTS pgleap_ddl_command_end;
			DROP EVENT TRIGGER IF EXISTS pgleap_ddl_sql_drop;
			DROP SCHEMA IF EXISTS pgleap_ddl CASCADE`)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("remove the capture of schema changes from the source: %w", err)
	}
	return true, nil
}

// Publish adds the log to the publication, unless it is there.
func Publish(ctx context.Context, source *pgx.Conn, publication string) error {
	_, err := source.Exec(ctx, `DO $$ BEGIN
		IF NOT EXISTS (SELECT FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
		               WHERE p.pubname = `+pg.QuoteLiteral(publication)+` AND pr.prrelid = 'pgleap_ddl.ddl_log'::regclass) THEN
			ALTER PUBLICATION `+pg.QuoteIdent(publication)+` ADD TABLE pgleap_ddl.ddl_log;
		END IF; END $$`)
	if err != nil {
		return fmt.Errorf("add the log of schema changes to publication %s: %w", publication, err)
	}
	return nil
}

// Command is one captured DDL command.
type Command struct {
	ID  int64
	Tag string // the command tag, such as "ALTER TABLE"
	// Objects are what it touched, each its type, schema and identity, tab-separated:
	// "table\tpublic\tpublic.orders" (ParseObject reads them).
	Objects    []string
	Query      string // the text of the whole statement the client sent
	SearchPath string
	Role       string
	// Superuser: the role was a superuser on the source when it ran the command.
	Superuser bool
}

// CommandFromRow reads a command from a log row's columns, by name, in text form.
func CommandFromRow(columns []string, values [][]byte) (Command, error) {
	var c Command
	for i, name := range columns {
		v := string(values[i])
		switch name {
		case "id":
			id, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return c, fmt.Errorf("read a captured schema change: id %q: %w", v, err)
			}
			c.ID = id
		case "tag":
			c.Tag = v
		case "objects":
			c.Objects = strings.Split(v, "\n")
		case "query":
			c.Query = v
		case "search_path":
			c.SearchPath = v
		case "role":
			c.Role = v
		case "superuser":
			c.Superuser = v == "t" || v == "true"
		}
	}
	if c.ID == 0 || c.Tag == "" {
		return c, fmt.Errorf("read a captured schema change: the row lacks its id or tag")
	}
	return c, nil
}

// ParseObject reads an object of a Command: its type ("table", "index", "schema"...), its
// schema, and its name unquoted, the last part of its identity ("" where it has none, such
// as a function's). A schema's schema is itself.
func ParseObject(object string) (kind, schema, name string) {
	parts := strings.SplitN(object, "\t", 3)
	if len(parts) < 3 {
		return object, "", ""
	}
	kind, schema = parts[0], parts[1]
	identity := parts[2]
	if kind == "schema" {
		return kind, unquote(identity), ""
	}
	if strings.ContainsAny(identity, "( ") && !strings.HasPrefix(kind, "table") && kind != "index" && !strings.HasSuffix(kind, "view") && kind != "sequence" {
		return kind, schema, "" // a function's arguments, an operator's, a constraint "x on y"
	}
	parts = splitIdentity(identity)
	return kind, schema, unquote(parts[len(parts)-1])
}

// ObjectNames are the names a command's objects go by in its statement: each one's name,
// or a schema's own; those that have none a statement would show (a function's
// signature, a trigger "t on s.r") are left out.
func ObjectNames(objects []string) []string {
	var names []string
	for _, o := range objects {
		kind, schema, name := ParseObject(o)
		if kind == "schema" {
			name = schema
		}
		if name != "" && !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names
}

// splitIdentity splits a dotted identity at the dots outside double quotes.
func splitIdentity(identity string) []string {
	var parts []string
	start, quoted := 0, false
	for i := 0; i < len(identity); i++ {
		switch identity[i] {
		case '"':
			quoted = !quoted
		case '.':
			if !quoted {
				parts = append(parts, identity[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, identity[start:])
}

func unquote(name string) string {
	if len(name) >= 2 && name[0] == '"' && name[len(name)-1] == '"' {
		return strings.ReplaceAll(name[1:len(name)-1], `""`, `"`)
	}
	return name
}
