package schema

import (
	"slices"
	"strings"
	"testing"
)

// A pg_dumpall --roles-only script as pg_dumpall 15 writes it.
const dumpedRoles = `--
-- PostgreSQL database cluster dump
--

\restrict abc

SET default_transaction_read_only = off;

SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;

--
-- Roles
--

CREATE ROLE "App Owner";
ALTER ROLE "App Owner" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE admin;
ALTER ROLE admin WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
CREATE ROLE rds_superuser;
ALTER ROLE rds_superuser WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE reader;
ALTER ROLE reader WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
ALTER ROLE reader SET statement_timeout TO '5s';
COMMENT ON ROLE reader IS 'reads; it''s a "role"';

--
-- Role memberships
--

GRANT reader TO "App Owner" GRANTED BY postgres;
GRANT rds_superuser TO admin GRANTED BY rdsadmin;
GRANT pg_monitor TO "App Owner" WITH ADMIN OPTION GRANTED BY postgres;
GRANT pg_monitor TO postgres GRANTED BY postgres;

\unrestrict abc
`

func TestPlanRoles(t *testing.T) {
	plan, warnings := planRoles(dumpedRoles, []string{"postgres", "pg_monitor", "rds_superuser"}, false, false)
	if !slices.Equal(plan.Created, []string{"App Owner", "admin", "reader"}) {
		t.Errorf("created = %v", plan.Created)
	}
	if !slices.Equal(plan.Existing, []string{"postgres"}) {
		t.Errorf("existing = %v, want postgres (service roles are not listed)", plan.Existing)
	}
	if !slices.Equal(plan.NeedLogin, []string{"App Owner", "admin"}) {
		t.Errorf("need a password = %v", plan.NeedLogin)
	}
	script := strings.Join(plan.Statements, "\n")
	for _, want := range []string{
		`CREATE ROLE "App Owner";`,
		"ALTER ROLE admin WITH INHERIT CREATEROLE CREATEDB LOGIN;",
		`ALTER ROLE "App Owner" WITH INHERIT NOCREATEROLE LOGIN;`,
		"ALTER ROLE reader SET statement_timeout TO '5s';",
		`COMMENT ON ROLE reader IS 'reads; it''s a "role"';`,
		`GRANT reader TO "App Owner"`,
		`GRANT pg_monitor TO "App Owner" WITH ADMIN OPTION`,
	} {
		if !strings.Contains(script, want) {
			t.Errorf("plan lacks %q:\n%s", want, script)
		}
	}
	for _, unwanted := range []string{"CREATE ROLE postgres", "rds_superuser", "GRANTED BY", "GRANT pg_monitor TO postgres", `\restrict`, "\nSET ", "client_encoding"} {
		if strings.Contains(script, unwanted) {
			t.Errorf("plan contains %q:\n%s", unwanted, script)
		}
	}
	if len(warnings) != 4 { // admin loses SUPERUSER, REPLICATION, BYPASSRLS and rds_superuser on a non-superuser target
		t.Errorf("warnings = %v", warnings)
	}
	asSuperuser, warnings := planRoles(dumpedRoles, []string{"postgres"}, true, true)
	if len(warnings) != 1 || len(asSuperuser.NeedLogin) != 0 || !strings.Contains(strings.Join(asSuperuser.Statements, "\n"), "WITH SUPERUSER") {
		t.Errorf("superuser target with passwords: %+v, %v", asSuperuser, warnings)
	}
}

func TestSplitStatements(t *testing.T) {
	got := splitStatements("SET x = 1;\nCREATE ROLE a;\nCOMMENT ON ROLE a IS 'x;\ny';\n-- c;\n\\restrict k\nGRANT a TO \"b;c\";\n")
	want := []string{"CREATE ROLE a;", "COMMENT ON ROLE a IS 'x;\ny';", `GRANT a TO "b;c";`}
	if !slices.Equal(got, want) {
		t.Errorf("splitStatements = %q, want %q", got, want)
	}
}
