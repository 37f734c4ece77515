// Package pgtest starts throwaway PostgreSQL servers of any major (12–18) for tests,
// benchmarks and the demo: real servers, never mocks.
//
// The binaries come from the cache that scripts/install-postgres.sh fills
// ($PGLEAP_PG_CACHE, default $HOME/.cache/pgleap/pg/<major>). Each server gets its own
// directory, a free TCP port on 127.0.0.1 and its own socket directory, wal_level=logical,
// and durability switched off for speed. Servers of several majors run side by side, and so
// do the test binaries of several packages.
//
// PostgreSQL refuses to run as root, so when the caller is root the server runs as the
// unprivileged OS user $PGLEAP_PG_OS_USER (default postgres) and its directory is handed to
// that user.
//
// # Lifetime
//
// Start ties a server to one test and stops and removes it when the test ends, pass or fail
// (the server's log is printed when the test failed). Shared hands every test of a package
// the same server of a major, stopped by Main when the package's tests are done; a test then
// takes a fresh database of its own with CreateDatabase. A server also receives SIGQUIT when
// the process that started it dies, so a killed test run leaves no server behind.
//
// # Versions
//
// SourceMajor and TargetMajor are the pair under test: 13 → 17 unless PGLEAP_TEST_SOURCE and
// PGLEAP_TEST_TARGET say otherwise.
package pgtest
