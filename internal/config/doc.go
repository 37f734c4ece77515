// Package config resolves what a pgleap command runs against: the source and target
// connection strings, from flags, then the PGLEAP_SOURCE / PGLEAP_TARGET environment variables,
// then a pgleap.yaml file holding the same keys.
//
// Connection strings are libpq keyword/value strings or postgres:// URLs and are passed to
// pgx unchanged; the usual PG* environment variables fill whatever they leave out. Redact
// removes passwords from a connection string before it is printed or logged.
//
// Nothing here connects to a server or blocks. Errors name the file or key at fault.
package config
