package pg

import (
	"strings"

	"github.com/jackc/pgx/v5"
)

// QuoteIdent quotes one identifier for SQL text: "Orders", "select", "a""b".
func QuoteIdent(name string) string {
	return pgx.Identifier{name}.Sanitize()
}

// QualifiedName quotes a schema-qualified name: "public"."orders". It is also how pgleap
// names objects in messages, so that a user can paste the name back into SQL.
func QualifiedName(schema, name string) string {
	return pgx.Identifier{schema, name}.Sanitize()
}

// QuoteLiteral quotes a string as an SQL literal for text meant for a human to run, such as
// a fix printed by pgleap check. Queries pgleap runs itself pass values as parameters.
func QuoteLiteral(value string) string {
	return "'" + strings.ReplaceAll(value, "'", "''") + "'"
}
