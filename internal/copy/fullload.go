package copy

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/schema"
	"github.com/pgleap/pgleap/internal/state"
)

// FullLoadResult says what a full load did.
type FullLoadResult struct {
	// CompletedEarlier: an earlier run finished the full load, and this one only checked
	// that; Schema is then nil, and Copy names only the slot and publication.
	CompletedEarlier bool `json:",omitempty"`
	Schema           *schema.Result
	Copy             *Result
	Analyzed         int
	Duration         time.Duration
}

// FullLoad brings the target to "every row copied, every index and constraint built":
// roles and pre-data, then the copy, with each table's post-data and ANALYZE run as soon as
// its rows are in while other tables still copy, then autovacuum set back as on the source.
func FullLoad(ctx context.Context, schemaOpts schema.Options, copyOpts Options) (*FullLoadResult, error) {
	start := time.Now()
	if copyOpts.Follow {
		if res, err := completedEarlier(ctx, schemaOpts); err != nil || res != nil {
			return res, err
		}
	}
	schemaOpts.Analyze = true
	stage, err := schema.Prepare(ctx, schemaOpts)
	if err != nil {
		return nil, err
	}
	defer stage.Close()
	if err := stage.RefuseRowsAfterSchemaOnly(ctx); err != nil {
		return nil, err
	}
	target, err := pg.Connect(ctx, pg.Target, copyOpts.Target)
	if err != nil {
		return nil, err
	}
	defer target.Close(context.WithoutCancel(ctx))
	res := &FullLoadResult{}
	if res.Schema, err = stage.Restore(ctx); err != nil {
		return nil, err
	}
	if err := state.SetPhase(ctx, target, state.PhaseCopying); err != nil {
		return nil, err
	}
	tables := stage.Plan().Tables()
	copyOpts.Only = map[string]bool{}
	for _, t := range tables {
		copyOpts.Only[pg.QualifiedName(t[0], t[1])] = true
	}
	copied := make(chan [2]string, len(tables)+1) // each table is reported once: sends never block
	copyOpts.TableCopied = func(schema, table string) { copied <- [2]string{schema, table} }
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return stage.BuildPostData(gctx, copied, res.Schema) })
	g.Go(func() error {
		var err error
		if res.Copy, err = Run(gctx, copyOpts); err != nil {
			return err // copied stays open: post-data must not take half-copied tables as done
		}
		close(copied)
		return state.SetPhase(gctx, target, state.PhaseIndexing)
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	res.Analyzed = len(tables)
	if err := restoreAutovacuum(ctx, copyOpts, tables); err != nil {
		return nil, err
	}
	if err := state.SetPhase(ctx, target, state.PhaseCopied); err != nil {
		return nil, err
	}
	res.Duration = time.Since(start)
	return res, nil
}

// completedEarlier returns the result of a full load an earlier run finished, with the slot
// changes stream from, or nil when there is none. A restarted migrate then goes straight to
// the stream: the schema stage, the copy and the post-data would each connect and find
// nothing to do, which delays the catching up by the time of a dozen connections.
func completedEarlier(ctx context.Context, opts schema.Options) (*FullLoadResult, error) {
	start := time.Now()
	source, target, err := pg.ConnectBoth(ctx, opts.Source, opts.Target)
	if err != nil {
		return nil, err
	}
	defer source.Close(context.WithoutCancel(ctx))
	defer target.Close(context.WithoutCancel(ctx))
	if exists, err := state.Exists(ctx, target); err != nil || !exists {
		return nil, err
	}
	version, err := pg.ServerVersion(ctx, source)
	if err != nil {
		return nil, err
	}
	// The same checks as a full load's: the state is brought up to date, and it must
	// record this migration.
	if err := schema.BeginMigration(ctx, source, target, version.Major, opts.Tables); err != nil {
		return nil, err
	}
	switch phase, _, err := state.Phase(ctx, target); {
	case err != nil:
		return nil, err
	case phase != state.PhaseCopied && phase != state.PhaseStreaming && phase != state.PhaseCutover:
		return nil, nil
	}
	repl, ok, err := state.LoadReplication(ctx, target)
	if err != nil || !ok || repl.StartLSN == 0 {
		return nil, err // a copy made with --no-follow: the full load creates the slot
	}
	return &FullLoadResult{CompletedEarlier: true, Duration: time.Since(start),
		Copy: &Result{Slot: repl.Slot, Publication: repl.Publication, StreamStartLSN: repl.StartLSN.String()}}, nil
}

// restoreAutovacuum gives each loaded table the autovacuum setting it has on the source.
func restoreAutovacuum(ctx context.Context, opts Options, tables [][2]string) error {
	source, target, err := pg.ConnectBoth(ctx, opts.Source, opts.Target)
	if err != nil {
		return err
	}
	defer source.Close(context.Background())
	defer target.Close(context.Background())
	for _, t := range tables {
		name := pg.QualifiedName(t[0], t[1])
		var table, toast *string
		err := source.QueryRow(ctx, `
			SELECT (SELECT option_value FROM pg_catalog.pg_options_to_table(c.reloptions) WHERE option_name = 'autovacuum_enabled'),
			       (SELECT option_value FROM pg_catalog.pg_options_to_table(tc.reloptions) WHERE option_name = 'autovacuum_enabled')
			FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_class tc ON tc.oid = c.reltoastrelid
			WHERE c.oid = to_regclass($1) AND c.relkind = 'r'`, name).Scan(&table, &toast)
		if err == pgx.ErrNoRows {
			continue // a partitioned parent (no storage, no autovacuum), or a table renamed or dropped since (migrate --ddl)
		}
		if err != nil {
			return fmt.Errorf("read autovacuum setting of %s on the source: %w", name, err)
		}
		for _, setting := range []struct {
			option string
			value  *string
		}{{"autovacuum_enabled", table}, {"toast.autovacuum_enabled", toast}} {
			sql := fmt.Sprintf("ALTER TABLE IF EXISTS %s RESET (%s)", name, setting.option)
			if setting.value != nil {
				sql = fmt.Sprintf("ALTER TABLE IF EXISTS %s SET (%s = %s)", name, setting.option, pg.QuoteLiteral(*setting.value))
			}
			if _, err := target.Exec(ctx, sql); err != nil {
				return fmt.Errorf("set autovacuum back on %s: %w", name, err)
			}
		}
	}
	return nil
}
