// Package pg opens pgleap's connections and answers the questions every stage asks of a
// server: its version, its settings, and how to quote a name.
//
// Every connection carries the session settings that make text forms of values round-trip
// exactly between majors (TimeZone=UTC, DateStyle=ISO, IntervalStyle=postgres,
// extra_float_digits=3, bytea_output=hex), set as startup parameters so that they hold on
// every connection, pooled or not, rather than with a SET that a pool would forget.
//
// # Failure
//
// A connection that cannot be opened returns a *ConnectError naming the side (source or
// target), the host and the server's or network's own message; the pgconn error stays
// reachable with errors.As. Passwords never appear in these errors.
//
// # Context
//
// Every function that talks to a server takes a context.Context; cancelling it abandons the
// connection attempt or query and returns ctx's error.
package pg
