package verify

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/pgleap/pgleap/internal/catalog"
	"github.com/pgleap/pgleap/internal/config"
)

// Large objects and sequences, compared beside the tables.

const largeObjectsDigestSQL = `SELECT count(*), coalesce(sum(('x' || substr(md5(m.oid::text || ':' || md5(pg_catalog.lo_get(m.oid))), 1, 16))::bit(64)::bigint), 0)::text
	FROM pg_catalog.pg_largeobject_metadata m`

const largeObjectsSQL = `SELECT m.oid::text, md5(pg_catalog.lo_get(m.oid)) FROM pg_catalog.pg_largeobject_metadata m`

// compareLargeObjects compares every large object's content by hash; nil when neither side
// has any.
func compareLargeObjects(ctx context.Context, w *worker, maxKeys int) (*TableResult, error) {
	var sourceCount, targetCount int64
	var sourceSum, targetSum string
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.source.QueryRow(gctx, largeObjectsDigestSQL).Scan(&sourceCount, &sourceSum) })
	g.Go(func() error { return w.target.QueryRow(gctx, largeObjectsDigestSQL).Scan(&targetCount, &targetSum) })
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("verify large objects: %w", err)
	}
	if sourceCount == 0 && targetCount == 0 {
		return nil, nil
	}
	r := &TableResult{Table: "large objects", Equal: true, SourceRows: sourceCount, TargetRows: targetCount, Chunks: 1}
	if sourceCount == targetCount && sourceSum == targetSum {
		return r, nil
	}
	var source, target map[string]string
	g, gctx = errgroup.WithContext(ctx)
	g.Go(func() (err error) { source, err = textPairs(gctx, w.source, largeObjectsSQL); return err })
	g.Go(func() (err error) { target, err = textPairs(gctx, w.target, largeObjectsSQL); return err })
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("verify large objects: %w", err)
	}
	r.differ(source, target, "oid ", maxKeys)
	return r, nil
}

const sequencesSQL = `SELECT schemaname, format('%I.%I', schemaname, sequencename), coalesce(last_value::text, 'not called yet')
	FROM pg_catalog.pg_sequences WHERE schemaname NOT IN (` + catalog.OwnSchemas + `)`

// compareSequences compares the values of the selected schemas' sequences. While changes
// stream they differ: cutover copies them.
func compareSequences(ctx context.Context, w *worker, selection config.TableFilter, maxKeys int) (*TableResult, error) {
	read := func(ctx context.Context, tx pgx.Tx) (map[string]string, error) {
		rows, err := tx.Query(ctx, sequencesSQL)
		if err != nil {
			return nil, err
		}
		values := map[string]string{}
		var schema, name, value string
		_, err = pgx.ForEachRow(rows, []any{&schema, &name, &value}, func() error {
			if !selection.ExcludesSchema(schema) {
				values[name] = value
			}
			return nil
		})
		return values, err
	}
	var source, target map[string]string
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { source, err = read(gctx, w.source); return err })
	g.Go(func() (err error) { target, err = read(gctx, w.target); return err })
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("verify sequences: %w", err)
	}
	r := &TableResult{Table: "sequences", Equal: true, SourceRows: int64(len(source)), TargetRows: int64(len(target)), Chunks: 1}
	r.differ(source, target, "", maxKeys)
	return r, nil
}

func textPairs(ctx context.Context, tx pgx.Tx, sql string) (map[string]string, error) {
	rows, err := tx.Query(ctx, sql)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	var k, v string
	_, err = pgx.ForEachRow(rows, []any{&k, &v}, func() error { out[k] = v; return nil })
	return out, err
}

// differ records the names whose values differ between source and target.
func (r *TableResult) differ(source, target map[string]string, prefix string, maxKeys int) {
	var diffs []RowDifference
	for k, s := range source {
		t, ok := target[k]
		switch {
		case !ok:
			diffs = append(diffs, RowDifference{Key: prefix + k, What: missingOnTarget, Source: s})
		case s != t:
			diffs = append(diffs, RowDifference{Key: prefix + k, What: valuesDiffer, Source: s, Target: t})
		}
	}
	for k, t := range target {
		if _, ok := source[k]; !ok {
			diffs = append(diffs, RowDifference{Key: prefix + k, What: onlyOnTarget, Target: t})
		}
	}
	if len(diffs) == 0 {
		return
	}
	slices.SortFunc(diffs, func(a, b RowDifference) int { return cmp.Compare(a.Key, b.Key) })
	r.Equal, r.DifferingChunks = false, 1
	if len(diffs) > maxKeys {
		r.MoreDifferences = len(diffs) - maxKeys
		diffs = diffs[:maxKeys]
	}
	r.Differences = diffs
}
