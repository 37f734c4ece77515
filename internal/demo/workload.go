package demo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// workload is the ticketing application: clients that sell and transfer tickets through
// PgBouncer, each call one transaction, as fast as they can with a little think time.
type workload struct {
	connString string
	clients    int
	people     int64

	mu       sync.Mutex
	writes   int64
	failures int64
	lastErr  error
	// window: the longest wait any client had for a write since the window opened.
	windowOpen  bool
	longestWait time.Duration

	stop context.CancelFunc
	done sync.WaitGroup
}

func startWorkload(ctx context.Context, connString string, clients int, people int64) (*workload, error) {
	w := &workload{connString: connString, clients: clients, people: people}
	ctx, w.stop = context.WithCancel(ctx)
	for i := range clients {
		conn, err := w.connect(ctx)
		if err != nil {
			w.stop()
			w.done.Wait()
			return nil, fmt.Errorf("workload client %d: connect through PgBouncer: %w", i+1, err)
		}
		w.done.Go(func() { w.client(ctx, conn, i) })
	}
	return w, nil
}

// client calls the application's functions until ctx ends. A write that fails is retried
// after a short wait on a new connection, as a pooled application would.
func (w *workload) client(ctx context.Context, conn *pgx.Conn, n int) {
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	rng := rand.New(rand.NewPCG(uint64(n), 42))
	last := time.Now()
	for ctx.Err() == nil {
		buyer := 1 + rng.Int64N(w.people)
		sql := "SELECT sell_ticket($1)"
		if rng.IntN(3) == 0 {
			sql = "SELECT transfer_ticket($1)"
		}
		_, err := conn.Exec(ctx, sql, buyer)
		now := time.Now()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			w.failed(err)
			conn.Close(context.Background())
			conn = nil
			for conn == nil && ctx.Err() == nil {
				time.Sleep(50 * time.Millisecond)
				if conn, err = w.connect(ctx); err != nil {
					w.failed(err)
				}
			}
			continue
		}
		w.wrote(now.Sub(last))
		last = now
		time.Sleep(time.Duration(rng.IntN(4)) * time.Millisecond)
	}
}

// connect opens a client connection. PgBouncer's transaction pooling hands each transaction
// to any server connection, where statements this client prepared may not exist: the
// application uses the simple query protocol, as such applications must.
func (w *workload) connect(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(w.connString)
	if err != nil {
		return nil, err
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	return pgx.ConnectConfig(ctx, cfg)
}

func (w *workload) wrote(wait time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	if w.windowOpen {
		w.longestWait = max(w.longestWait, wait)
	}
}

func (w *workload) failed(err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failures++
	w.lastErr = err
}

// openWindow starts measuring the longest wait for a write; closeWindow returns it with the
// writes that failed meanwhile.
func (w *workload) openWindow() (failuresBefore int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.windowOpen, w.longestWait = true, 0
	return w.failures
}

func (w *workload) closeWindow(failuresBefore int64) (longestWait time.Duration, failures int64, lastErr error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.windowOpen = false
	return w.longestWait, w.failures - failuresBefore, w.lastErr
}

func (w *workload) counts() (writes, failures int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writes, w.failures
}

func (w *workload) close() {
	w.stop()
	w.done.Wait()
}
