package assess

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pgleap/pgleap/internal/catalog"
	"github.com/pgleap/pgleap/internal/pg"
)

// MinSourceMajor is the oldest source pgleap migrates from.
const MinSourceMajor = 12

func checkSourceVersion(_ context.Context, env *Env) ([]Finding, error) {
	if env.Source.Version.Major >= MinSourceMajor {
		return nil, nil
	}
	return []Finding{{
		Check: "source.version", Severity: Blocker, Object: env.Source.Version.String(),
		Why: fmt.Sprintf("pgleap migrates from PostgreSQL %d or later; this source runs %s.", MinSourceMajor, env.Source.Version),
		Fix: fmt.Sprintf("upgrade the source to PostgreSQL %d or later first (pg_upgrade), or move this database with pg_dump and pg_restore", MinSourceMajor),
	}}, nil
}

// slotsNeeded: one slot for the migration's stream, one spare for the temporary slot that
// re-copying a single table takes. Each needs a WAL sender while it is in use.
const slotsNeeded = 2

type replicationFacts struct {
	Settings    map[string]string
	SlotsInUse  int
	WALSenders  int
	DatabaseMiB int64
}

const replicationCountsSQL = `
SELECT (SELECT count(*) FROM pg_catalog.pg_replication_slots)::int,
       (SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE backend_type = 'walsender')::int,
       (pg_catalog.pg_database_size(current_database()) / 1048576)::bigint`

func checkReplicationSettings(ctx context.Context, env *Env) ([]Finding, error) {
	conn := env.Source.conn
	settings, err := pg.Settings(ctx, conn, "wal_level", "max_replication_slots", "max_wal_senders",
		"max_slot_wal_keep_size", "wal_sender_timeout", "logical_decoding_work_mem")
	if err != nil {
		return nil, err
	}
	facts := replicationFacts{Settings: settings}
	if err := conn.QueryRow(ctx, replicationCountsSQL).Scan(&facts.SlotsInUse, &facts.WALSenders, &facts.DatabaseMiB); err != nil {
		return nil, fmt.Errorf("count replication slots and WAL senders: %w", err)
	}
	return judgeReplicationSettings(env.Source, facts), nil
}

func judgeReplicationSettings(source Server, facts replicationFacts) []Finding {
	var findings []Finding
	s := facts.Settings
	if level := s["wal_level"]; level != "logical" {
		findings = append(findings, Finding{
			Check: "source.wal_level", Severity: Blocker, Object: "wal_level",
			Why: fmt.Sprintf("wal_level is %s: streaming changes needs logical decoding, which needs wal_level = logical.", level),
			Fix: walLevelFix(source),
		})
	}
	free := func(check, name string, inUse int) {
		limit, _ := strconv.Atoi(s[name])
		available := limit - inUse
		if available >= slotsNeeded {
			return
		}
		severity := Blocker
		if available > 0 {
			severity = Warning
		}
		findings = append(findings, Finding{
			Check: check, Severity: severity, Object: name,
			Why: fmt.Sprintf("%s is %d with %d in use, leaving %d: pgleap needs %d (its stream, and a spare to re-copy a table).",
				name, limit, inUse, max(available, 0), slotsNeeded),
			Fix: source.settingFix(name, strconv.Itoa(inUse+slotsNeeded+2), true),
		})
	}
	free("source.max_replication_slots", "max_replication_slots", facts.SlotsInUse)
	free("source.max_wal_senders", "max_wal_senders", facts.WALSenders)

	if keep, ok := s["max_slot_wal_keep_size"]; ok && keep == "-1" {
		suggestGB := max(16, (facts.DatabaseMiB+1023)/1024)
		findings = append(findings, Finding{
			Check: "source.max_slot_wal_keep_size", Severity: Warning, Object: "max_slot_wal_keep_size",
			Why: "max_slot_wal_keep_size is -1: if the migration stalls, its slot keeps WAL without limit and can fill the source's disk.",
			Fix: source.settingFix("max_slot_wal_keep_size", fmt.Sprintf("%dGB", suggestGB), false) +
				" (enough for the WAL written during the whole copy; a slot that passes it is lost and the migration starts again)",
		})
	} else if !ok {
		findings = append(findings, Finding{
			Check: "source.max_slot_wal_keep_size", Severity: Info, Object: "max_slot_wal_keep_size",
			Why: fmt.Sprintf("PostgreSQL %d cannot cap the WAL a replication slot keeps: a stalled migration can fill the source's disk.", source.Version.Major),
			Fix: "watch the source's free disk during the migration (pgleap status shows the slot's retained WAL)",
		})
	}
	if timeout, err := strconv.Atoi(s["wal_sender_timeout"]); err == nil && timeout > 0 && timeout < 60000 {
		findings = append(findings, Finding{
			Check: "source.wal_sender_timeout", Severity: Warning, Object: "wal_sender_timeout",
			Why: fmt.Sprintf("wal_sender_timeout is %s: decoding a large transaction or a slow network can go quiet for longer and break the stream.", time.Duration(timeout)*time.Millisecond),
			Fix: source.settingFix("wal_sender_timeout", "60s", false),
		})
	}
	if memKB, err := strconv.Atoi(s["logical_decoding_work_mem"]); err == nil && memKB < 64*1024 {
		findings = append(findings, Finding{
			Check: "source.logical_decoding_work_mem", Severity: Warning, Object: "logical_decoding_work_mem",
			Why: fmt.Sprintf("logical_decoding_work_mem is %dkB: large transactions spill to the source's disk while they are decoded and stream slowly.", memKB),
			Fix: source.settingFix("logical_decoding_work_mem", "256MB", false),
		})
	}
	return findings
}

func walLevelFix(s Server) string {
	switch s.Managed {
	case RDS, Aurora:
		return s.settingFix("rds.logical_replication", "1", true)
	case CloudSQL:
		return s.settingFix("cloudsql.logical_decoding", "on", true)
	case AlloyDB:
		return s.settingFix("alloydb.logical_decoding", "on", true)
	}
	return s.settingFix("wal_level", "logical", true)
}

const replicationPrivilegeSQL = `
SELECT r.rolsuper OR r.rolreplication
       OR EXISTS (SELECT FROM pg_catalog.pg_roles g
                  WHERE g.rolname = 'rds_replication' AND pg_catalog.pg_has_role(r.oid, g.oid, 'MEMBER')),
       pg_catalog.has_database_privilege(current_database(), 'CREATE')
FROM pg_catalog.pg_roles r WHERE r.rolname = current_user`

func checkReplicationPrivilege(ctx context.Context, env *Env) ([]Finding, error) {
	var canReplicate, canCreate bool
	if err := env.Source.conn.QueryRow(ctx, replicationPrivilegeSQL).Scan(&canReplicate, &canCreate); err != nil {
		return nil, err
	}
	var findings []Finding
	user := pg.QuoteIdent(env.Source.User)
	if !canReplicate {
		fix := fmt.Sprintf("ALTER ROLE %s REPLICATION; (run as a superuser)", user)
		switch env.Source.Managed {
		case RDS, Aurora:
			fix = fmt.Sprintf("GRANT rds_replication TO %s;", user)
		case CloudSQL, Azure, AlloyDB:
			fix = fmt.Sprintf("ALTER ROLE %s WITH REPLICATION; (run as the service's admin role)", user)
		}
		findings = append(findings, Finding{
			Check: "source.replication_privilege", Severity: Blocker, Object: user,
			Why: "the role lacks REPLICATION: it cannot create the replication slot that streams changes.",
			Fix: fix,
		})
	}
	if !canCreate && !env.Source.Superuser {
		db := pg.QuoteIdent(env.Source.Database)
		findings = append(findings, Finding{
			Check: "source.publication_privilege", Severity: Blocker, Object: db,
			Why: "the role cannot create objects in the source database, so it cannot create the publication.",
			Fix: fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s;", db, user),
		})
	}
	return findings, nil
}

func checkTablePrivileges(_ context.Context, env *Env) ([]Finding, error) {
	return judgeTablePrivileges(env.Source, env.Tables), nil
}

func judgeTablePrivileges(source Server, tables []catalog.Table) []Finding {
	var findings []Finding
	user := pg.QuoteIdent(source.User)
	for _, t := range tables {
		name := t.QualifiedName()
		if !t.CanSelect && !source.Superuser {
			findings = append(findings, Finding{
				Check: "source.table_privilege", Severity: Blocker, Object: name,
				Why: "the role cannot read this table, so its rows cannot be copied.",
				Fix: fmt.Sprintf("GRANT USAGE ON SCHEMA %s TO %s; GRANT SELECT ON %s TO %s;", pg.QuoteIdent(t.Schema), user, name, user),
			})
		}
		// A publication names tables its creator owns; partitions are published through their
		// root and foreign tables cannot be published at all.
		if !t.OwnedByCaller && !source.Superuser && t.PartitionOf == "" && t.Kind != catalog.KindForeign {
			findings = append(findings, Finding{
				Check: "source.publication_privilege", Severity: Blocker, Object: name,
				Why: fmt.Sprintf("only the owner (%s) can add this table to a publication.", pg.QuoteIdent(t.Owner)),
				Fix: fmt.Sprintf("GRANT %s TO %s; (membership in the owning role), or run pgleap as the owner", pg.QuoteIdent(t.Owner), user),
			})
		}
	}
	return findings
}

func checkCaseCollisions(_ context.Context, env *Env) ([]Finding, error) {
	return judgeCaseCollisions(env.Tables), nil
}

// judgeCaseCollisions finds names that differ only by case: "Orders" and orders. pgleap
// quotes every name, but patterns, scripts and other tools that fold case mix them up.
func judgeCaseCollisions(tables []catalog.Table) []Finding {
	var findings []Finding
	report := func(object string, names []string, what string) {
		findings = append(findings, Finding{
			Check: "source.case_collision", Severity: Warning, Object: object,
			Why: fmt.Sprintf("%s %s differ only by case: tools and scripts that fold case to lower confuse them.", what, strings.Join(names, " and ")),
			Fix: "rename one of them (ALTER ... RENAME TO ...), or take care to quote these names everywhere, including --include/--exclude patterns",
		})
	}
	for _, group := range groupByFold(tables, func(t catalog.Table) string { return t.Schema }) {
		report(pg.QuoteIdent(group[0]), quoteAll(group), "schemas")
	}
	for _, group := range groupByFold(tables, func(t catalog.Table) string { return t.Schema + "\x00" + t.Name }) {
		names := make([]string, len(group))
		for i, key := range group {
			schema, name, _ := strings.Cut(key, "\x00")
			names[i] = pg.QualifiedName(schema, name)
		}
		report(names[0], names, "tables")
	}
	for _, t := range tables {
		for _, group := range groupByFold(t.Columns, func(c catalog.Column) string { return c.Name }) {
			report(t.QualifiedName(), quoteAll(group), "columns")
		}
	}
	return findings
}

// groupByFold returns, in first-seen order, each set of distinct keys that are equal when
// folded to lower case.
func groupByFold[T any](items []T, key func(T) string) [][]string {
	seen := map[string]bool{}
	byFold := map[string][]string{}
	var order []string
	for _, item := range items {
		k := key(item)
		if seen[k] {
			continue
		}
		seen[k] = true
		folded := strings.ToLower(k)
		if byFold[folded] == nil {
			order = append(order, folded)
		}
		byFold[folded] = append(byFold[folded], k)
	}
	var groups [][]string
	for _, folded := range order {
		if len(byFold[folded]) > 1 {
			groups = append(groups, byFold[folded])
		}
	}
	return groups
}

func quoteAll(names []string) []string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = pg.QuoteIdent(n)
	}
	return quoted
}

type openTransaction struct {
	PID        int
	User       string
	Database   string
	State      string
	AgeSeconds float64
	QueryStart *time.Time
}

// Slot creation waits until every transaction running when it starts has finished, in every
// database of the cluster, so long and forgotten transactions delay the whole migration.
const openTransactionsSQL = `
SELECT pid, coalesce(usename, ''), coalesce(datname, ''), coalesce(state, ''),
       extract(epoch FROM now() - xact_start)::float8, query_start
FROM pg_catalog.pg_stat_activity
WHERE pid <> pg_catalog.pg_backend_pid() AND backend_type = 'client backend' AND xact_start IS NOT NULL
  AND (state LIKE 'idle in transaction%' OR now() - xact_start >= make_interval(secs => $1))
ORDER BY xact_start`

type preparedTransaction struct {
	GID        string
	Owner      string
	Database   string
	AgeSeconds float64
}

const preparedTransactionsSQL = `
SELECT gid, owner, database, extract(epoch FROM now() - prepared)::float8 FROM pg_catalog.pg_prepared_xacts ORDER BY prepared`

func checkSessions(ctx context.Context, env *Env) ([]Finding, error) {
	conn := env.Source.conn
	open, err := queryRows[openTransaction](ctx, conn, openTransactionsSQL, env.Options.LongTransactionAge.Seconds())
	if err != nil {
		return nil, fmt.Errorf("list open transactions: %w", err)
	}
	prepared, err := queryRows[preparedTransaction](ctx, conn, preparedTransactionsSQL)
	if err != nil {
		return nil, fmt.Errorf("list prepared transactions: %w", err)
	}
	return judgeSessions(open, prepared), nil
}

func judgeSessions(open []openTransaction, prepared []preparedTransaction) []Finding {
	var findings []Finding
	for _, tx := range open {
		started := "never ran a query"
		if tx.QueryStart != nil {
			started = "last query started " + tx.QueryStart.UTC().Format(time.RFC3339)
		}
		findings = append(findings, Finding{
			Check: "source.long_transaction", Severity: Warning, Object: fmt.Sprintf("pid %d", tx.PID),
			Why: fmt.Sprintf("user %s on database %s has had a transaction open for %s (%s, %s): creating the replication slot waits for it to end.",
				pg.QuoteIdent(tx.User), pg.QuoteIdent(tx.Database), seconds(tx.AgeSeconds), tx.State, started),
			Fix: fmt.Sprintf("end it in the application, or SELECT pg_terminate_backend(%d);", tx.PID),
		})
	}
	for _, tx := range prepared {
		findings = append(findings, Finding{
			Check: "source.prepared_transaction", Severity: Warning, Object: pg.QuoteLiteral(tx.GID),
			Why: fmt.Sprintf("a transaction prepared %s ago by %s on database %s is still pending: creating the replication slot waits for it.",
				seconds(tx.AgeSeconds), pg.QuoteIdent(tx.Owner), pg.QuoteIdent(tx.Database)),
			Fix: fmt.Sprintf("COMMIT PREPARED %s; or ROLLBACK PREPARED %s; (connected to database %s)",
				pg.QuoteLiteral(tx.GID), pg.QuoteLiteral(tx.GID), pg.QuoteIdent(tx.Database)),
		})
	}
	return findings
}

func seconds(s float64) time.Duration {
	return (time.Duration(s) * time.Second).Round(time.Second)
}
