package schema

import (
	"fmt"
	"slices"
	"strings"

	"github.com/pgleap/pgleap/internal/pg"
)

// managedRolePrefixes name roles that a managed service creates on every server: they exist
// on the target already, or must not be created there, and only the service grants them.
var managedRolePrefixes = []string{"rds", "azure", "cloudsql", "alloydb"}

func isManagedRole(name string) bool {
	for _, prefix := range managedRolePrefixes {
		if strings.HasPrefix(name, prefix) {
			return true
		}
	}
	return false
}

// isServiceRole: PostgreSQL's own roles (pg_monitor, ...) and a managed service's are never
// created; memberships in PostgreSQL's are carried, in a service's are not.
func isServiceRole(name string) bool { return strings.HasPrefix(name, "pg_") || isManagedRole(name) }

// RolePlan is what the roles step runs on the target, and what it leaves to the user.
type RolePlan struct {
	Statements []string
	Created    []string // roles the plan creates
	Existing   []string // source roles that already exist on the target, left as they are
	NeedLogin  []string // created roles that can log in but got no password
}

// planRoles filters pg_dumpall --roles-only output for the target: roles that exist there
// or belong to PostgreSQL or a managed service are left alone; memberships are granted
// between roles that exist once the plan has run. targetSuperuser false means privileges
// only a superuser can grant are dropped (and listed in the returned warnings).
func planRoles(script string, targetRoles []string, passwordsCopied, targetSuperuser bool) (RolePlan, []string) {
	var plan RolePlan
	var warnings []string
	existing := map[string]bool{}
	for _, r := range targetRoles {
		existing[r] = true
	}
	statements := splitStatements(script)
	creates := map[string]bool{}
	for _, stmt := range statements {
		if words := sqlWords(stmt); len(words) == 3 && upper(words[0]) == "CREATE" && upper(words[1]) == "ROLE" {
			name := words[2]
			switch {
			case isServiceRole(name):
			case existing[name]:
				plan.Existing = append(plan.Existing, name)
			default:
				creates[name] = true
				plan.Created = append(plan.Created, name)
			}
		}
	}
	exists := func(name string) bool { return existing[name] || creates[name] }
	for _, stmt := range statements {
		words := sqlWords(stmt)
		if len(words) < 3 {
			continue
		}
		switch {
		case upper(words[0]) == "CREATE" && upper(words[1]) == "ROLE",
			upper(words[0]) == "ALTER" && upper(words[1]) == "ROLE",
			upper(words[0]) == "COMMENT" && upper(words[1]) == "ON" && len(words) > 3 && upper(words[2]) == "ROLE",
			upper(words[0]) == "SECURITY" && upper(words[1]) == "LABEL":
			role := roleOf(words)
			if !creates[role] {
				continue
			}
			if upper(words[0]) == "ALTER" && !targetSuperuser {
				var dropped []string
				stmt, dropped = withoutSuperuserAttributes(stmt)
				for _, attr := range dropped {
					warnings = append(warnings, fmt.Sprintf("role %s is created without %s: only a superuser can grant it on the target", pg.QuoteIdent(role), attr))
				}
			}
			if upper(words[0]) == "ALTER" && containsWord(words, "LOGIN") && !passwordsCopied {
				plan.NeedLogin = append(plan.NeedLogin, role)
			}
			plan.Statements = append(plan.Statements, stmt)
		case upper(words[0]) == "GRANT":
			// GRANT granted TO grantee [WITH ADMIN OPTION] [GRANTED BY grantor]
			to := slices.IndexFunc(words, func(w string) bool { return upper(w) == "TO" })
			if to != 2 || to+1 >= len(words) {
				continue
			}
			if isManagedRole(words[1]) && creates[words[to+1]] {
				warnings = append(warnings, fmt.Sprintf("role %s is not made a member of %s: only the managed service grants its roles; grant it on the target if needed",
					pg.QuoteIdent(words[to+1]), pg.QuoteIdent(words[1])))
				continue
			}
			if !exists(words[1]) || !exists(words[to+1]) {
				continue
			}
			if !creates[words[1]] && !creates[words[to+1]] {
				continue // both roles were on the target already: their memberships are the target's business
			}
			// The grantor may not exist on the target; the migrating role grants instead.
			if by := strings.Index(strings.ToUpper(stmt), " GRANTED BY "); by >= 0 {
				stmt = stmt[:by]
			}
			plan.Statements = append(plan.Statements, strings.TrimSuffix(strings.TrimSpace(stmt), ";"))
		}
	}
	return plan, warnings
}

// roleOf returns the role an ALTER/CREATE ROLE, COMMENT ON ROLE or SECURITY LABEL statement
// is about.
func roleOf(words []string) string {
	switch upper(words[0]) {
	case "COMMENT":
		return words[3]
	case "SECURITY": // SECURITY LABEL [FOR provider] ON ROLE name IS ...
		for i := 0; i+2 < len(words); i++ {
			if upper(words[i]) == "ON" && upper(words[i+1]) == "ROLE" {
				return words[i+2]
			}
		}
		return ""
	}
	return words[2]
}

var superuserAttributes = []string{"SUPERUSER", "REPLICATION", "BYPASSRLS"}

// withoutSuperuserAttributes drops from an ALTER ROLE the attributes a role that is not a
// superuser may not set: SUPERUSER, REPLICATION and BYPASSRLS, and their NO forms too, which
// PostgreSQL refuses as well (from 16 on, also NOCREATEDB without CREATEDB). The NO forms
// are a new role's defaults anyway. It returns the positive ones dropped.
func withoutSuperuserAttributes(stmt string) (string, []string) {
	// pg_dumpall writes them after the last WITH: ALTER ROLE name WITH attribute ...
	// (a password verifier holds no space); other ALTER ROLEs (SET ...) are left as written.
	with := strings.LastIndex(stmt, " WITH ")
	if with < 0 {
		return stmt, nil
	}
	var dropped []string
	kept := []string{stmt[:with+len(" WITH")]}
	for _, f := range strings.Fields(stmt[with:])[1:] {
		bare := strings.TrimSuffix(f, ";")
		switch {
		case slices.Contains(superuserAttributes, bare):
			dropped = append(dropped, bare)
		case bare == "NOCREATEDB" || strings.HasPrefix(bare, "NO") && slices.Contains(superuserAttributes, bare[2:]):
		default:
			kept = append(kept, bare)
		}
	}
	return strings.Join(kept, " ") + ";", dropped
}

func containsWord(words []string, word string) bool {
	return slices.ContainsFunc(words, func(w string) bool { return upper(w) == word })
}

func upper(s string) string { return strings.ToUpper(s) }

// splitStatements splits SQL text on semicolons outside quotes and comments, dropping psql
// meta-commands (\restrict and the like), comments and SET lines.
func splitStatements(script string) []string {
	var statements []string
	var cur strings.Builder
	inSingle, inDouble := false, false
	lines := strings.Split(script, "\n")
	for _, line := range lines {
		if !inSingle && !inDouble {
			trimmed := strings.TrimSpace(line)
			if strings.HasPrefix(trimmed, `\`) || strings.HasPrefix(trimmed, "--") || (cur.Len() == 0 && strings.HasPrefix(trimmed, "SET ")) {
				continue
			}
		}
		for i := 0; i < len(line); i++ {
			c := line[i]
			switch {
			case c == '\'' && !inDouble:
				inSingle = !inSingle
			case c == '"' && !inSingle:
				inDouble = !inDouble
			case c == ';' && !inSingle && !inDouble:
				if stmt := strings.TrimSpace(cur.String()); stmt != "" {
					statements = append(statements, stmt+";")
				}
				cur.Reset()
				continue
			}
			cur.WriteByte(c)
		}
		cur.WriteByte('\n')
	}
	return statements
}

// sqlWords splits a statement into words: quoted identifiers are unquoted, string literals
// and punctuation are dropped.
func sqlWords(stmt string) []string {
	var words []string
	for i := 0; i < len(stmt); {
		c := stmt[i]
		switch {
		case c == '"':
			var b strings.Builder
			i++
			for i < len(stmt) {
				if stmt[i] == '"' {
					if i+1 < len(stmt) && stmt[i+1] == '"' {
						b.WriteByte('"')
						i += 2
						continue
					}
					i++
					break
				}
				b.WriteByte(stmt[i])
				i++
			}
			words = append(words, b.String())
		case c == '\'':
			i++
			for i < len(stmt) {
				if stmt[i] == '\'' {
					if i+1 < len(stmt) && stmt[i+1] == '\'' {
						i += 2
						continue
					}
					i++
					break
				}
				i++
			}
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80:
			start := i
			for i < len(stmt) && (stmt[i] == '_' || stmt[i] == '$' || stmt[i] >= 'a' && stmt[i] <= 'z' ||
				stmt[i] >= 'A' && stmt[i] <= 'Z' || stmt[i] >= '0' && stmt[i] <= '9' || stmt[i] >= 0x80) {
				i++
			}
			words = append(words, stmt[start:i])
		default:
			i++
		}
	}
	return words
}
