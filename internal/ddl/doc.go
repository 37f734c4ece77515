// Package ddl carries schema changes made on the source during a migration (pgleap migrate
// --ddl).
//
// Logical replication does not carry DDL. Install puts on the source an event trigger that
// records each DDL command in pgleap_ddl.ddl_log, a table in the migration's publication:
// the row is written in the command's own transaction, so it reaches the stream at exactly
// the command's position among the row changes. The apply (package cdc) runs the command on
// the target there, before any later change. A new table is added to the publication in the
// same transaction, so its rows stream from its creation on.
//
// The trigger records the text of the whole statement the client sent (current_query()),
// which may hold several statements; Statement picks the one that ran. A command run inside
// a function or a DO block has no statement of its own in that text: the apply stops and
// says so.
package ddl
