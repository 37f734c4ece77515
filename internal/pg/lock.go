package pg

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrLocked is returned by Lock when another session holds the lock.
var ErrLocked = errors.New("locked by another session")

// Lock takes session advisory lock key in side's database on a connection of its own, and
// holds it until release: a process that dies loses its session, and the lock with it.
// When another session holds it, the error wraps ErrLocked and says who.
func Lock(ctx context.Context, side Side, connString string, key int64) (release func(), err error) {
	conn, err := Connect(ctx, side, connString)
	if err != nil {
		return nil, err
	}
	var locked bool
	if err := conn.QueryRow(ctx, "SELECT pg_catalog.pg_try_advisory_lock($1)", key).Scan(&locked); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("take a lock on the %s: %w", side, err)
	}
	if locked {
		return func() { conn.Close(context.Background()) }, nil
	}
	defer conn.Close(context.Background())
	var pid int
	var client string
	var since time.Time
	err = conn.QueryRow(ctx, `SELECT a.pid, coalesce(host(a.client_addr), 'a local socket'), a.backend_start
		FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
		  AND l.classid::bigint = $1::bigint >> 32 AND l.objid::bigint = $1::bigint & 4294967295
		  AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())`, key).
		Scan(&pid, &client, &since)
	if err != nil {
		return nil, fmt.Errorf("%w (its session ended meanwhile: try again)", ErrLocked)
	}
	return nil, fmt.Errorf("%w: server process %d, connected from %s since %s", ErrLocked, pid, client, since.Format(time.RFC3339))
}
