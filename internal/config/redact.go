package config

import (
	"net/url"
	"strings"
)

const redacted = "xxxxx"

// Redact returns connString with any password replaced, in either libpq form: the userinfo
// or the password parameter of a URL, or the password keyword of a keyword/value string.
// A string it cannot read is returned with everything after the first "password" hidden:
// showing too little beats leaking a secret.
func Redact(connString string) string {
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		return redactURL(connString)
	}
	return redactKeywordValue(connString)
}

func redactURL(connString string) string {
	u, err := url.Parse(connString)
	if err != nil {
		return hideAfterPassword(connString)
	}
	if _, hasPassword := u.User.Password(); hasPassword {
		u.User = url.UserPassword(u.User.Username(), redacted)
	}
	query := u.Query()
	if query.Has("password") {
		query.Set("password", redacted)
		u.RawQuery = query.Encode()
	}
	return u.String()
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
