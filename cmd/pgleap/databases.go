package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/schema"
	"github.com/pgleap/pgleap/internal/state"
)

// Several databases of one cluster in one migration (--databases, --all-databases): the
// command runs once per database, as if --source and --target named that database on each
// server, each with its own slot, publication, state and progress; their output is
// prefixed with the database's name. migrate runs them at once within the --jobs budget,
// after the first has copied the roles; cutover and rollback freeze them together and open
// them together (cutover.Coordinator).

// databaseFlags select the databases.
type databaseFlags struct {
	names []string
	all   bool
}

// databaseRun is one database's part of a run over several.
type databaseRun struct {
	name string
	of   int // how many databases the run covers
	// coordinator makes the cutovers (or rollbacks) of the databases one.
	coordinator *cutoverBarrier
}

func (c *cli) addDatabaseFlags(cmd *cobra.Command) {
	cmd.Flags().StringSliceVar(&c.databases.names, "databases", nil,
		"migrate these databases of the source cluster (comma-separated), each to the same-named database on the target; --source and --target then name the servers")
	cmd.Flags().BoolVar(&c.databases.all, "all-databases", false,
		"every database of the source cluster but templates and postgres (name postgres in --databases to take it)")
	cmd.MarkFlagsMutuallyExclusive("databases", "all-databases")
}

// severalDatabases reports whether the command runs over several databases.
func (c *cli) severalDatabases() bool {
	return c.perDB == nil && (len(c.databases.names) > 0 || c.databases.all)
}

// listDatabases resolves --databases or --all-databases against the source cluster.
func (c *cli) listDatabases(ctx context.Context, source string) ([]string, error) {
	conn, err := c.connectReadOnly(ctx, pg.Source, source)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1")
	if err != nil {
		return nil, fmt.Errorf("list the source's databases: %w", err)
	}
	onSource, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list the source's databases: %w", err)
	}
	if c.databases.all {
		return slices.DeleteFunc(onSource, func(db string) bool { return db == "postgres" }), nil
	}
	var names []string
	for _, db := range c.databases.names {
		if !slices.Contains(onSource, db) {
			return nil, &usageError{fmt.Errorf("--databases: the source has no database %s (it has %s)", pg.QuoteIdent(db), strings.Join(onSource, ", "))}
		}
		if !slices.Contains(names, db) {
			names = append(names, db)
		}
	}
	return names, nil
}

// runDatabases runs the command line once per selected database and returns the outcome
// of them all: the worst exit status wins.
func (c *cli) runDatabases(cmd *cobra.Command) error {
	for _, flag := range []string{"http", "pgbouncer", "watch"} {
		if f := cmd.Flags().Lookup(flag); f != nil && f.Changed {
			return &usageError{fmt.Errorf("--%s serves one database: with several, run pgleap once per database for it", flag)}
		}
	}
	resolved, err := c.connections("source", "target")
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	names, err := c.listDatabases(ctx, resolved.Source)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return &usageError{errors.New("--all-databases: the source holds no database but templates and postgres")}
	}
	runs := make([]*databaseRun, len(names))
	for i, name := range names {
		runs[i] = &databaseRun{name: name, of: len(names)}
	}
	command := cmd.Name()
	coordinated := command == "cutover" || command == "rollback" // one freeze for all
	if coordinated {
		barrier := newCutoverBarrier(len(names))
		for _, r := range runs {
			r.coordinator = barrier
		}
	}
	var outputs []*bytes.Buffer
	var outputMu sync.Mutex // the databases' lines, whole, one at a time
	out := func(i int) io.Writer {
		if c.json {
			return outputs[i] // gathered into one JSON object
		}
		return newPrefixWriter(&outputMu, c.stdout, names[i]+": ")
	}
	for range names {
		outputs = append(outputs, &bytes.Buffer{})
	}
	codes := make([]int, len(names))
	missing, err := missingOnTarget(ctx, c, resolved.Target, names)
	if err != nil {
		return err
	}
	if coordinated {
		for _, name := range names {
			if missing[name] {
				return fmt.Errorf("database %s is not on the target: run pgleap migrate --databases first; nothing was changed", pg.QuoteIdent(name))
			}
		}
	}
	runOne := func(i int) {
		if missing[names[i]] {
			// migrate creates it; until then there is nothing of it to check, watch or cut over.
			fmt.Fprintf(newPrefixWriter(&outputMu, c.stderr, names[i]+": "), "not on the target yet: pgleap migrate creates it with the source's encoding and locale (pgleap's role needs CREATEDB there)\n")
			if command != "check" {
				codes[i] = exitCannotRun
			}
			return
		}
		stdout, stderr := out(i), newPrefixWriter(&outputMu, c.stderr, names[i]+": ")
		codes[i] = runWith(ctx, c.args, stdout, stderr, c.getenv, runs[i])
		stderr.flush()
		if p, ok := stdout.(*prefixWriter); ok {
			p.flush()
		}
		if runs[i].coordinator != nil && codes[i] != exitOK {
			runs[i].coordinator.fail(names[i])
		}
	}
	switch command {
	case "migrate":
		if err := createTargetDatabases(ctx, c, resolved.Source, resolved.Target, names, missing); err != nil {
			return err
		}
		clear(missing) // all there now
		// The first copies the roles of the cluster, and the others start once it has: two
		// at once would both create them. Should it stop first, the next one copies them.
		var wg sync.WaitGroup
		rolesCopied := false
		for i := range names {
			done := make(chan struct{})
			wg.Go(func() {
				defer close(done)
				runOne(i)
			})
			if rolesCopied {
				continue
			}
			copied, err := waitForRoles(ctx, pg.WithDatabase(resolved.Target, names[i]), done)
			if err != nil {
				wg.Wait()
				return err
			}
			if rolesCopied = copied; copied {
				if err := giveTargetDatabasesTheirOwners(ctx, resolved.Source, resolved.Target, names); err != nil {
					c.logger.Warn("the new target databases keep pgleap's role as owner", "err", err)
				}
			}
		}
		wg.Wait()
	case "cutover", "rollback":
		var wg sync.WaitGroup
		for i := range names {
			wg.Go(func() { runOne(i) })
		}
		wg.Wait()
		// A rollback records itself on the old server, a cutover on the new one.
		recordedOn := resolved.Target
		if command == "rollback" {
			recordedOn = resolved.Source
		}
		if pause, ok := unionPause(ctx, recordedOn, names); ok && !c.json && !slices.Contains(codes, exitCannotRun) {
			fmt.Fprintf(c.stdout, "writes paused on the %d databases together for %d ms, from the first freeze to the last open\n", len(names), pause.Milliseconds())
		}
	default:
		for i := range names {
			runOne(i)
		}
	}
	if c.json {
		all := map[string]json.RawMessage{}
		for i, name := range names {
			raw := bytes.TrimSpace(outputs[i].Bytes())
			if !json.Valid(raw) {
				raw, _ = json.Marshal(string(raw))
			}
			all[name] = raw
		}
		if err := writeJSON(c.stdout, all); err != nil {
			return err
		}
	}
	return databasesOutcome(names, codes)
}

// databasesOutcome sums up the databases' exit statuses: the worst wins.
func databasesOutcome(names []string, codes []int) error {
	var no, failed []string
	for i, code := range codes {
		switch code {
		case exitAnswerNo:
			no = append(no, names[i])
		case exitOK:
		default:
			failed = append(failed, names[i])
		}
	}
	switch {
	case len(failed) > 0:
		return fmt.Errorf("%d of %d databases could not run (%s): see their lines above", len(failed), len(names), strings.Join(failed, ", "))
	case len(no) > 0:
		return &answerNoError{fmt.Sprintf("%d of %d databases answered no (%s): see their lines above", len(no), len(names), strings.Join(no, ", "))}
	}
	return nil
}

// unionPause is the write pause of the databases' cutovers together: from the first
// freeze to the last open, as each recorded them on the server connString names (one
// clock); ok is false unless every one is done.
func unionPause(ctx context.Context, connString string, names []string) (time.Duration, bool) {
	var first, last time.Time
	for _, name := range names {
		conn, err := pg.Connect(ctx, pg.Target, pg.WithDatabase(connString, name))
		if err != nil {
			return 0, false
		}
		c, ok, err := state.LastFinishedCutover(ctx, conn)
		conn.Close(context.Background())
		if err != nil || !ok || c.Outcome != state.CutoverDone || c.FinishedAt == nil {
			return 0, false
		}
		frozen := c.FinishedAt.Add(-c.WritePause)
		if first.IsZero() || frozen.Before(first) {
			first = frozen
		}
		if c.FinishedAt.After(last) {
			last = *c.FinishedAt
		}
	}
	return last.Sub(first), true
}

// waitForRoles waits until a database's migrate has copied the roles (its state records
// the step), or has stopped; copied says which.
func waitForRoles(ctx context.Context, target string, stopped <-chan struct{}) (copied bool, err error) {
	conn, err := pg.Connect(ctx, pg.Target, target)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())
	for {
		if copied, err := rolesCopied(ctx, conn); err == nil && copied {
			return true, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-stopped:
			return false, nil // it says why; the next one copies the roles
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// missingOnTarget tells which of the databases the target lacks.
func missingOnTarget(ctx context.Context, c *cli, target string, names []string) (map[string]bool, error) {
	conn, err := c.connectReadOnly(ctx, pg.Target, target)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	missing := map[string]bool{}
	for _, name := range names {
		var exists bool
		if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
			return nil, fmt.Errorf("look for database %s on the target: %w", pg.QuoteIdent(name), err)
		}
		missing[name] = !exists
	}
	return missing, nil
}

// rolesCopied reports whether a database's migration has copied the roles: its state, once
// there, records the step.
func rolesCopied(ctx context.Context, conn *pgx.Conn) (bool, error) {
	if exists, err := state.Exists(ctx, conn); err != nil || !exists {
		return false, err
	}
	done, err := state.DoneSteps(ctx, conn)
	return done[schema.StepRoles], err
}

// createTargetDatabases creates the databases the target lacks, with the source's
// encoding and locale; pgleap's role owns them until the roles are copied.
func createTargetDatabases(ctx context.Context, c *cli, source, target string, names []string, missing map[string]bool) error {
	sourceConn, err := c.connectReadOnly(ctx, pg.Source, source)
	if err != nil {
		return err
	}
	defer sourceConn.Close(context.Background())
	targetConn, err := pg.Connect(ctx, pg.Target, target)
	if err != nil {
		return err
	}
	defer targetConn.Close(context.Background())
	version, err := pg.ServerVersion(ctx, sourceConn)
	if err != nil {
		return err
	}
	for _, name := range names {
		if !missing[name] {
			continue
		}
		locale, err := pg.ReadDatabaseLocale(ctx, sourceConn, version.Major, name)
		if err != nil {
			return fmt.Errorf("read database %s on the source: %w", pg.QuoteIdent(name), err)
		}
		sql := fmt.Sprintf("CREATE DATABASE %s TEMPLATE template0 %s", pg.QuoteIdent(name), locale.CreateClause())
		if _, err := targetConn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("create database %s on the target: %w: pgleap's role needs CREATEDB there, or create it yourself with the source's encoding and locale", pg.QuoteIdent(name), err)
		}
		c.logger.Info("created the database on the target", "database", name, "encoding", locale.Encoding, "collate", locale.Collate, "provider", locale.Provider)
	}
	return nil
}

// giveTargetDatabasesTheirOwners hands each target database pgleap's role owns to the
// source database's owner, once the roles are copied.
func giveTargetDatabasesTheirOwners(ctx context.Context, source, target string, names []string) error {
	sourceConn, targetConn, err := pg.ConnectBoth(ctx, source, target)
	if err != nil {
		return err
	}
	defer sourceConn.Close(context.Background())
	defer targetConn.Close(context.Background())
	var errs []error
	for _, name := range names {
		var owner string
		if err := sourceConn.QueryRow(ctx, "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_catalog.pg_database WHERE datname = $1", name).Scan(&owner); err != nil {
			errs = append(errs, err)
			continue
		}
		var ownedByUs, ownerExists bool
		err := targetConn.QueryRow(ctx, `SELECT pg_catalog.pg_get_userbyid(datdba) = current_user,
			EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = $2)
			FROM pg_catalog.pg_database WHERE datname = $1`, name, owner).Scan(&ownedByUs, &ownerExists)
		if err != nil || !ownedByUs || !ownerExists {
			errs = append(errs, err)
			continue
		}
		if _, err := targetConn.Exec(ctx, "ALTER DATABASE "+pg.QuoteIdent(name)+" OWNER TO "+pg.QuoteIdent(owner)); err != nil {
			errs = append(errs, fmt.Errorf("database %s: %w", pg.QuoteIdent(name), err))
		}
	}
	return errors.Join(errs...)
}

// cutoverBarrier makes the cutovers of several databases one (cutover.Coordinator): each
// waits at the two points until every other has arrived, and any that fails or is not
// ready stops them all.
type cutoverBarrier struct {
	mu      sync.Mutex
	parties int
	arrived [2]int
	failed  error
	changed chan struct{} // closed at each change
}

func newCutoverBarrier(parties int) *cutoverBarrier {
	return &cutoverBarrier{parties: parties, changed: make(chan struct{})}
}

func (b *cutoverBarrier) broadcast() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// fail stops the others: the cutover of database db did not reach the end.
func (b *cutoverBarrier) fail(db string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failed == nil {
		b.failed = fmt.Errorf("the cutover of database %s stopped", pg.QuoteIdent(db))
	}
	b.broadcast()
}

func (b *cutoverBarrier) wait(ctx context.Context, point int, ok bool) error {
	b.mu.Lock()
	if !ok && b.failed == nil {
		b.failed = errors.New("another database's cutover is not ready")
	}
	b.arrived[point]++
	b.broadcast()
	for b.failed == nil && b.arrived[point] < b.parties {
		changed := b.changed
		b.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
		b.mu.Lock()
	}
	defer b.mu.Unlock()
	return b.failed
}

// Ready and Confirmed make it a cutover.Coordinator.
func (b *cutoverBarrier) Ready(ctx context.Context, ok bool) error { return b.wait(ctx, 0, ok) }
func (b *cutoverBarrier) Confirmed(ctx context.Context) error      { return b.wait(ctx, 1, true) }

// prefixWriter writes each line with a prefix, whole lines at a time, to a writer several
// share under mu.
type prefixWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func newPrefixWriter(mu *sync.Mutex, w io.Writer, prefix string) *prefixWriter {
	return &prefixWriter{mu: mu, w: w, prefix: prefix}
}

// flush writes what is left of a last line without its newline.
func (p *prefixWriter) flush() {
	if len(p.buf) > 0 {
		p.Write([]byte("\n"))
	}
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		if _, err := fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf[:i]); err != nil {
			return 0, err
		}
		p.buf = p.buf[i+1:]
	}
}
