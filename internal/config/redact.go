package config

import (
	"fmt"
	"net/url"
	"strings"
)

const redacted = "xxxxx"

// Redact returns connString with any password replaced, in either libpq form: the userinfo
// or the password parameter of a URL, or the password keyword of a keyword/value string.
// A string it cannot read is returned with everything after the first "password" hidden:
// showing too little beats leaking a secret.
func Redact(connString string) string {
	if isURL(connString) {
		return redactURL(connString, func(u *url.URL, hasUserPassword bool) {
			if hasUserPassword {
				u.User = url.UserPassword(u.User.Username(), redacted)
			}
		}, func(q url.Values) { q.Set("password", redacted) })
	}
	return redactKeywordValue(connString)
}

// SplitPassword separates the password from a connection string, for programs such as
// pg_dump that take it from PGPASSWORD: a password on their command line would be visible
// to every user of the machine. password is "" when the string holds none.
func SplitPassword(connString string) (withoutPassword, password string, err error) {
	if isURL(connString) {
		u, err := url.Parse(connString)
		if err != nil {
			return "", "", fmt.Errorf("parse connection URL %s: %w", Redact(connString), err)
		}
		if p, ok := u.User.Password(); ok {
			password = p
			u.User = url.User(u.User.Username())
		}
		query := u.Query()
		if query.Has("password") {
			password = query.Get("password")
			query.Del("password")
			u.RawQuery = query.Encode()
		}
		return u.String(), password, nil
	}
	var kept []string
	for _, pair := range keywordValuePairs(connString) {
		if pair.key == "password" {
			password = unquoteConninfo(pair.value)
			continue
		}
		kept = append(kept, pair.raw)
	}
	return strings.Join(kept, " "), password, nil
}

func isURL(connString string) bool {
	return strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://")
}

func redactURL(connString string, user func(*url.URL, bool), passwordParam func(url.Values)) string {
	u, err := url.Parse(connString)
	if err != nil {
		return hideAfterPassword(connString)
	}
	_, hasPassword := u.User.Password()
	user(u, hasPassword)
	query := u.Query()
	if query.Has("password") {
		passwordParam(query)
		u.RawQuery = query.Encode()
	}
	return u.String()
}

type conninfoPair struct{ key, value, raw string }

// keywordValuePairs splits a keyword/value connection string into its pairs; a string it
// cannot read yields what it read so far.
func keywordValuePairs(connString string) []conninfoPair {
	var pairs []conninfoPair
	s := strings.TrimSpace(connString)
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return pairs
		}
		key := strings.TrimSpace(s[:eq])
		rest := strings.TrimLeft(s[eq+1:], " \t\n\r\f\v")
		n, ok := conninfoValueLen(rest)
		if !ok {
			return pairs
		}
		pairs = append(pairs, conninfoPair{key: key, value: rest[:n], raw: key + "=" + rest[:n]})
		s = strings.TrimSpace(rest[n:])
	}
	return pairs
}

// unquoteConninfo undoes libpq's quoting of one value: surrounding single quotes and
// backslash escapes.
func unquoteConninfo(value string) string {
	value = strings.TrimSuffix(strings.TrimPrefix(value, "'"), "'")
	var b strings.Builder
	for i := 0; i < len(value); i++ {
		if value[i] == '\\' && i+1 < len(value) {
			i++
		}
		b.WriteByte(value[i])
	}
	return b.String()
}

// redactKeywordValue walks "key = value" pairs the way libpq's conninfo parser does: values
// may be single-quoted, with backslash escapes inside or outside quotes.
func redactKeywordValue(connString string) string {
	var out strings.Builder
	s := connString
	for {
		trimmed := strings.TrimLeft(s, " \t\n\r\f\v")
		out.WriteString(s[:len(s)-len(trimmed)])
		s = trimmed
		if s == "" {
			return out.String()
		}
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			out.WriteString(s)
			return out.String()
		}
		key := strings.TrimSpace(s[:eq])
		out.WriteString(s[:eq+1])
		s = s[eq+1:]
		trimmed = strings.TrimLeft(s, " \t\n\r\f\v")
		out.WriteString(s[:len(s)-len(trimmed)])
		s = trimmed
		valueLen, ok := conninfoValueLen(s)
		if !ok {
			return hideAfterPassword(connString)
		}
		if key == "password" {
			out.WriteString(redacted)
		} else {
			out.WriteString(s[:valueLen])
		}
		s = s[valueLen:]
	}
}

// conninfoValueLen returns how many bytes of s the next value takes, quotes included.
func conninfoValueLen(s string) (int, bool) {
	if strings.HasPrefix(s, "'") {
		for i := 1; i < len(s); i++ {
			switch s[i] {
			case '\\':
				i++
			case '\'':
				return i + 1, true
			}
		}
		return 0, false // unterminated quote
	}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case ' ', '\t', '\n', '\r', '\f', '\v':
			return i, true
		}
	}
	return len(s), true
}

func hideAfterPassword(connString string) string {
	if i := strings.Index(strings.ToLower(connString), "password"); i >= 0 {
		return connString[:i] + "password=" + redacted
	}
	if i := strings.Index(connString, "@"); i >= 0 { // URL userinfo we could not parse
		return redacted + connString[i:]
	}
	return connString
}
