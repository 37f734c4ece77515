// Package demo runs pgleap's whole story on one machine: an old and a new PostgreSQL server
// and a PgBouncer that it starts itself under one directory, a sporting-events ticketing
// database (sample.sql) with an application writing to it through PgBouncer, then pgleap
// check, migrate, status, verify, cutover through PgBouncer and verify of the way back, each
// step introduced by a sentence saying what happens and why. The pgleap commands run as the
// pgleap binary would run them (Options.Pgleap), and their output is shown as it comes.
package demo
