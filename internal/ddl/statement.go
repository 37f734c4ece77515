package ddl

import (
	"slices"
	"strings"
)

// fillers are the words that may stand between a command tag's first two words in the
// statement: CREATE OR REPLACE FUNCTION, CREATE UNIQUE INDEX, CREATE TEMP TABLE...
var fillers = []string{"OR", "REPLACE", "UNIQUE", "TEMP", "TEMPORARY", "UNLOGGED", "GLOBAL", "LOCAL", "RECURSIVE",
	"TRUSTED", "PROCEDURAL", "CONSTRAINT", "DEFAULT"}

// matches reports whether a statement is one a command with this tag (pg_event_trigger's
// TG_TAG, such as "CREATE INDEX") runs.
func matches(stmt, tag string) bool {
	tagWords := leadingWords(tag, 8)
	words := leadingWords(stmt, 12)
	if len(tagWords) == 0 || len(words) == 0 || words[0] != tagWords[0] {
		return false
	}
	rest := words[1:]
	if len(tagWords) > 1 && tagWords[0] != "SELECT" {
		// The command's second word follows the first, past fillers only.
		i := 0
		for i < len(rest) && slices.Contains(fillers, rest[i]) {
			i++
		}
		if i == len(rest) || rest[i] != tagWords[1] {
			return false
		}
		rest, tagWords = rest[i+1:], tagWords[1:]
	}
	// Any further word (CREATE TABLE ... AS, SELECT ... INTO) comes later, in order.
	for _, w := range tagWords[1:] {
		i := slices.Index(rest, w)
		if i < 0 {
			return false
		}
		rest = rest[i+1:]
	}
	return true
}

// Statement picks, among a query's statements from index from on, the first that a
// command with this tag runs, and returns it with the index after it. ok is false when
// none does: the command ran inside a function or a DO block, whose statements the query
// text does not show.
func Statement(statements []string, tag string, from int) (stmt string, next int, ok bool) {
	for i := from; i < len(statements); i++ {
		if matches(statements[i], tag) {
			return statements[i], i + 1, true
		}
	}
	return "", from, false
}

// Concurrent reports whether a statement cannot run inside a transaction block: CREATE or
// DROP INDEX CONCURRENTLY, ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY.
func Concurrent(stmt string) bool {
	words := leadingWords(stmt, 16)
	if len(words) < 3 {
		return false
	}
	switch words[0] {
	case "CREATE", "DROP":
		i := slices.Index(words, "INDEX")
		return i > 0 && i+1 < len(words) && words[i+1] == "CONCURRENTLY"
	case "ALTER":
		all := leadingWords(stmt, 64)
		return slices.Contains(all, "DETACH") && all[len(all)-1] == "CONCURRENTLY"
	}
	return false
}

// momentDependent are the defaults whose value depends on the row or the moment: a column
// added with one is filled by the target with values of its own.
var momentDependent = []string{"NOW(", "CURRENT_TIMESTAMP", "CURRENT_DATE", "CURRENT_TIME", "LOCALTIMESTAMP", "LOCALTIME",
	"CLOCK_TIMESTAMP(", "STATEMENT_TIMESTAMP(", "TRANSACTION_TIMESTAMP(", "RANDOM(", "GEN_RANDOM_UUID(", "UUID_GENERATE",
	"NEXTVAL(", "SERIAL", "IDENTITY"}

// FillsRowsItsOwnWay reports whether a statement adds a column to existing rows with a
// value each server computes for itself (now(), random(), a sequence): the target's rows
// then differ from the source's. A heuristic on the text, erring towards saying so.
func FillsRowsItsOwnWay(stmt string) bool {
	words := leadingWords(stmt, 64)
	if len(words) < 2 || words[0] != "ALTER" || words[1] != "TABLE" || !slices.Contains(words, "ADD") {
		return false
	}
	upper := strings.ToUpper(strings.Join(strings.Fields(stmt), ""))
	for _, f := range momentDependent {
		if strings.Contains(upper, strings.ReplaceAll(f, " ", "")) {
			return true
		}
	}
	return false
}
