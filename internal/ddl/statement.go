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
		// The command's second word follows the first, past fillers only (the word itself
		// first: ALTER DEFAULT PRIVILEGES).
		i := 0
		for i < len(rest) && rest[i] != tagWords[1] && slices.Contains(fillers, rest[i]) {
			i++
		}
		if i == len(rest) || rest[i] != tagWords[1] {
			return false
		}
		tagWords = tagWords[1:]
	}
	// Any further word (CREATE TABLE t (a, b) AS, SELECT count(*) INTO) comes later, in order.
	all := statementWords(stmt)
	at := 0
	for _, w := range tagWords[1:] {
		i := slices.Index(all[at:], w)
		if i < 0 {
			return false
		}
		at += i + 1
	}
	return true
}

// namesAny reports whether a statement names one of the objects (their unquoted names, as
// ObjectNames gives them): as a plain word folded to lower case, or quoted. With no names
// to look for, any statement does.
func namesAny(stmt string, objects []string) bool {
	if len(objects) == 0 {
		return true
	}
	for _, w := range statementNames(stmt) {
		if slices.Contains(objects, w) {
			return true
		}
	}
	return false
}

// Statement picks, among a query's statements from index from on, the first that a
// command with this tag runs and that names one of the objects it touched (ObjectNames),
// and returns it with the index after it: a statement that recorded nothing (a temporary
// table, an IF EXISTS that found nothing) is passed over. ok is false when none does: the
// command ran inside a function or a DO block, whose statements the query text does not
// show.
func Statement(statements []string, tag string, objects []string, from int) (stmt string, next int, ok bool) {
	for i := from; i < len(statements); i++ {
		if matches(statements[i], tag) && namesAny(statements[i], objects) {
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
