package ddl

import (
	"strings"
	"unicode"
)

// Split splits SQL text into statements, each without its terminating semicolon and
// trimmed, ignoring semicolons inside quotes, dollar quotes and comments. Comments stay in
// the statements they are in.
func Split(sql string) []string {
	var statements []string
	start := 0
	flush := func(end int) {
		if s := strings.TrimSpace(sql[start:end]); s != "" && !onlyComments(s) {
			statements = append(statements, s)
		}
	}
	for i := 0; i < len(sql); {
		if next := skipCommentOrLiteral(sql, i); next > i {
			i = next
			continue
		}
		switch sql[i] {
		case ';':
			flush(i)
			start = i + 1
		case '"':
			i = skipQuoted(sql, i, '"', false)
			continue
		}
		i++
	}
	flush(len(sql))
	return statements
}

// skipCommentOrLiteral returns the index after the comment, string literal or
// dollar-quoted string opening at i, or i when none opens there.
func skipCommentOrLiteral(sql string, i int) int {
	switch c := sql[i]; {
	case c == '-' && strings.HasPrefix(sql[i:], "--"):
		if end := strings.IndexByte(sql[i:], '\n'); end >= 0 {
			return i + end + 1
		}
		return len(sql)
	case c == '/' && strings.HasPrefix(sql[i:], "/*"):
		return skipBlockComment(sql, i)
	case c == '\'':
		escapes := i > 0 && (sql[i-1] == 'E' || sql[i-1] == 'e') && (i < 2 || !isIdentChar(sql[i-2]))
		return skipQuoted(sql, i, '\'', escapes)
	case c == '$' && (i == 0 || !isIdentChar(sql[i-1])):
		if next := skipDollarQuoted(sql, i); next > i+1 {
			return next
		}
	}
	return i
}

func isIdentChar(c byte) bool {
	return c == '_' || c == '$' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

// skipQuoted returns the index after the quoted text opening at i; a doubled quote stays
// inside, and so does a backslash-escaped one in an E” string.
func skipQuoted(sql string, i int, quote byte, backslashEscapes bool) int {
	for i++; i < len(sql); i++ {
		switch {
		case backslashEscapes && sql[i] == '\\':
			i++
		case sql[i] == quote && i+1 < len(sql) && sql[i+1] == quote:
			i++
		case sql[i] == quote:
			return i + 1
		}
	}
	return len(sql)
}

// skipBlockComment returns the index after the /* comment */ opening at i; they nest.
func skipBlockComment(sql string, i int) int {
	depth := 0
	for i < len(sql) {
		switch {
		case strings.HasPrefix(sql[i:], "/*"):
			depth++
			i += 2
		case strings.HasPrefix(sql[i:], "*/"):
			depth--
			i += 2
			if depth == 0 {
				return i
			}
		default:
			i++
		}
	}
	return len(sql)
}

// skipDollarQuoted returns the index after the $tag$ ... $tag$ string opening at i, or
// i+1 when the $ opens none (a parameter such as $1).
func skipDollarQuoted(sql string, i int) int {
	end := strings.IndexByte(sql[i+1:], '$')
	if end < 0 {
		return i + 1
	}
	tag := sql[i : i+1+end+1]
	for _, r := range tag[1 : len(tag)-1] {
		if !(r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r)) {
			return i + 1
		}
	}
	if len(tag) > 2 && unicode.IsDigit(rune(tag[1])) {
		return i + 1
	}
	close := strings.Index(sql[i+len(tag):], tag)
	if close < 0 {
		return len(sql)
	}
	return i + len(tag) + close + len(tag)
}

func onlyComments(s string) bool {
	for i := 0; i < len(s); {
		if next := skipCommentOrLiteral(s, i); next > i && (s[i] == '-' || s[i] == '/') {
			i = next
			continue
		}
		if !unicode.IsSpace(rune(s[i])) {
			return false
		}
		i++
	}
	return true
}

// leadingWords are the first n keywords of a statement, upper-cased, past comments, up to
// the first parenthesis or literal: the words that name the command. A quoted name is
// "\"", never a keyword.
func leadingWords(stmt string, n int) []string {
	var words []string
	scanWords(stmt, true, func(word string, quoted bool) bool {
		if quoted {
			word = `"`
		}
		words = append(words, strings.ToUpper(word))
		return len(words) < n
	})
	return words
}

// statementWords are all the keywords and plain names of a statement, upper-cased, past
// comments, literals and quoted names.
func statementWords(stmt string) []string {
	var words []string
	scanWords(stmt, false, func(word string, quoted bool) bool {
		if !quoted {
			words = append(words, strings.ToUpper(word))
		}
		return true
	})
	return words
}

// statementNames are the names a statement may use: its plain words folded to lower case
// as PostgreSQL folds them, and its quoted names as written.
func statementNames(stmt string) []string {
	var names []string
	scanWords(stmt, false, func(word string, quoted bool) bool {
		if !quoted {
			word = strings.ToLower(word)
		}
		names = append(names, word)
		return true
	})
	return names
}

// scanWords calls word for each word of a statement, and each quoted name, unquoted,
// until word returns false, or with untilOpen, until a parenthesis or a literal.
func scanWords(stmt string, untilOpen bool, word func(w string, quoted bool) (more bool)) {
	for i := 0; i < len(stmt); {
		c := stmt[i]
		if untilOpen && (c == '(' || c == '\'' || c == '$') {
			return
		}
		if next := skipCommentOrLiteral(stmt, i); next > i {
			i = next
			continue
		}
		switch {
		case c == '"':
			end := skipQuoted(stmt, i, '"', false)
			if !word(strings.ReplaceAll(stmt[i+1:max(i+1, end-1)], `""`, `"`), true) {
				return
			}
			i = end
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80:
			j := i
			for j < len(stmt) && isIdentChar(stmt[j]) {
				j++
			}
			if !word(stmt[i:j], false) {
				return
			}
			i = j
		default:
			i++
		}
	}
}
