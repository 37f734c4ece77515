package cdc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgleap/pgleap/internal/catalog"
	"github.com/pgleap/pgleap/internal/config"
	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/state"
)

// Options configure streaming.
type Options struct {
	Source, Target string
	Logger         *slog.Logger
	// StatusInterval is how often the source hears the applied position while changes flow;
	// when the stream is idle pgleap asks for a keepalive this often, to move past WAL that
	// holds nothing to apply.
	StatusInterval time.Duration
	// MaxRetryDelay is the longest wait between reconnections after a lost connection.
	MaxRetryDelay time.Duration
	// SkipDDL are captured schema changes (by id) not to run on the target: the user ran
	// their equivalent (pgleap migrate --skip-ddl).
	SkipDDL []int64
	// DDLRoles are the roles, besides superusers, whose captured schema changes the apply
	// runs on the target; another's stops it.
	DDLRoles []string
}

// ErrCutOver is returned once pgleap cutover has handed the writes to the target: nothing
// streams from the source any more.
var ErrCutOver = errors.New("the migration is cut over: the target takes the writes, nothing streams from the source any more")

// Stats say what a stream did.
type Stats struct {
	ApplyStats
	Reconnects int
}

// Stream applies the source's changes to the target until ctx ends, reconnecting after
// lost connections. It returns nil when ctx ends, and an error when the apply cannot go
// on (a schema mismatch, a missing row, a lost slot).
func Stream(ctx context.Context, opts Options) (Stats, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.StatusInterval <= 0 {
		opts.StatusInterval = time.Second
	}
	if opts.MaxRetryDelay <= 0 {
		opts.MaxRetryDelay = 30 * time.Second
	}
	var stats Stats
	var orderedUntil pglogrepl.LSN
	delay := 500 * time.Millisecond
	for {
		s := &session{opts: opts, orderedUntil: orderedUntil}
		err := s.run(ctx)
		stats.Transactions += s.stats().Transactions
		stats.Changes += s.stats().Changes
		stats.Skipped += s.stats().Skipped
		stats.Groups += s.stats().Groups
		stats.TargetTime += s.stats().TargetTime
		stats.Prefetched += s.stats().Prefetched
		if ctx.Err() != nil {
			return stats, nil
		}
		var conflict *errCompactionConflict
		if errors.As(err, &conflict) {
			opts.Logger.Info("net changes met a unique constraint: applying them again in order", "until", conflict.until, "err", conflict.err)
			orderedUntil = conflict.until
			continue
		}
		if !retryable(err) && !s.lost {
			return stats, err
		}
		if s.progressed {
			delay = 500 * time.Millisecond
		}
		opts.Logger.Warn("streaming interrupted: reconnecting", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return stats, nil
		case <-time.After(delay):
		}
		delay = min(delay*2, opts.MaxRetryDelay)
		stats.Reconnects++
	}
}

// errSourceEndedStream: the walsender ended the stream, as it does when its server shuts down.
var errSourceEndedStream = errors.New("stream from the source: the source ended the stream (shutting down?)")

// retryable tells a lost connection or a server going away, which a reconnection may
// cure, from an error the apply would only meet again.
func retryable(err error) bool {
	if err == nil {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "08", "57", "53": // connection, operator intervention (shutdown), resources
			return pgErr.Code != "57014" // query_canceled is ours
		case "40": // serialization failure, deadlock
			return true
		}
		return pgErr.Code == "55006" // object in use: the slot is still held by our old walsender
	}
	var connectErr *pg.ConnectError
	var netErr net.Error
	return errors.Is(err, errSourceEndedStream) || errors.As(err, &connectErr) || errors.As(err, &netErr) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || pgconn.SafeToRetry(err)
}

// session is one connection to each side, from the recorded position until an error.
type session struct {
	opts   Options
	repl   *pgconn.PgConn // replication connection to the source
	source *pgx.Conn      // catalog lookups on the source
	target *pgx.Conn      // the apply session
	// prefetch reads rows ahead of the apply session on a session of its own (nil when
	// that session could not be opened).
	prefetch   *prefetcher
	applier    *applier
	decoder    *Decoder
	progressed bool // applied something: the next reconnection need not wait long
	// orderedUntil: transactions committed up to here are applied one change at a time.
	orderedUntil pglogrepl.LSN
	// spill keeps streamed transactions until they end (sources of 14 and later).
	spill      *spill
	inStream   bool
	streamXid  uint32
	lost       bool      // a connection broke
	streaming  bool      // the replication connection streams (loop has begun)
	nextStatus time.Time // when the source is next told where the target stands
	// replMu is held by whoever uses repl: the loop while it receives, sendStatus, and
	// answerWhileBusy, which tells the source where the stream stands while the loop waits
	// for the target. It guards loopStatus and loopStatusPos: when the loop last told the
	// source, and what.
	replMu        sync.Mutex
	loopStatus    time.Time
	loopStatusPos pglogrepl.LSN
	// hold is where a verification asked the apply to stop (see hold.go).
	hold         pendingHold
	nextHoldPoll time.Time
}

// connectionLost reports whether a connection of the session broke, whatever error the
// call that met it returned: a server restart ends sessions between two statements.
func (s *session) connectionLost() bool {
	return s.repl != nil && s.repl.IsClosed() || s.source != nil && s.source.IsClosed() || s.target != nil && s.target.IsClosed()
}

func (s *session) stats() ApplyStats {
	if s.applier == nil {
		return ApplyStats{}
	}
	return s.applier.Stats
}

func (s *session) run(ctx context.Context) error {
	err := s.stream(ctx)
	stopped := ctx.Err() != nil && (err == nil || errors.Is(err, ctx.Err())) // and nothing else failed
	if s.applier != nil {
		// The group the target is committing has the target connection until it is done.
		settleErr := s.applier.settle()
		err, stopped = errors.Join(err, settleErr), stopped && settleErr == nil
	}
	s.lost = s.connectionLost() // before close, which closes them all
	if stopped && s.streaming && !s.lost {
		s.confirmAtStop()
	}
	s.close()
	return err
}

// confirmAtStop records what the target applied and tells the source, as a clean stop
// (Ctrl-C) ends the stream: otherwise the slot's confirmed position would lag by up to a
// status interval. (The WAL the source keeps for the slot starts at its restart point,
// which moves on its own schedule.) The open group, if any, is rolled back and streams
// again next time. A failure only leaves the confirmed position where it was.
func (s *session) confirmAtStop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a := s.applier
	a.rollback(ctx)
	err := s.persistIdle(ctx)
	if err == nil {
		err = s.sendStatus(ctx, false)
	}
	if err != nil {
		s.opts.Logger.Warn("stopping: could not confirm the applied position to the source; the next run does", "applied", a.applied, "err", err)
	}
}

func (s *session) stream(ctx context.Context) error {
	if err := s.connect(ctx); err != nil {
		return err
	}
	repl, ok, err := state.LoadReplication(ctx, s.target)
	if err != nil {
		return err
	}
	if !ok || repl.StartLSN == 0 {
		return errors.New("stream changes: the target records no replication slot: run pgleap migrate, which creates it before the copy")
	}
	progress, err := state.LoadProgress(ctx, s.target)
	if err != nil {
		return err
	}
	skip, err := syncLSNs(ctx, s.source, s.target, repl.StartLSN)
	if err != nil {
		return err
	}
	s.applier = newApplier(s.target, skip, progress.AppliedLSN, s.orderedUntil)
	s.applier.logger = s.opts.Logger
	s.applier.prefetch = s.prefetch
	for _, id := range s.opts.SkipDDL {
		s.applier.skipDDL[id] = true
	}
	for _, role := range s.opts.DDLRoles {
		s.applier.ddlRoles[role] = true
	}
	if m, ok, err := state.LoadMigration(ctx, s.target); err != nil {
		return err
	} else if ok {
		s.applier.selection = config.TableFilter{Include: m.Include, Exclude: m.Exclude}
	}
	s.decoder = NewDecoder()
	version, err := pg.ServerVersion(ctx, s.source)
	if err != nil {
		return err
	}
	args := []string{"proto_version '1'", "publication_names '" + repl.Publication + "'"}
	if version.Major >= 14 {
		// Large transactions arrive while they run, instead of after the source has written
		// them all to its own disk at commit (see spill.go).
		if s.spill, err = newSpill(); err != nil {
			return err
		}
		args = []string{"proto_version '2'", "streaming 'on'", "publication_names '" + repl.Publication + "'"}
	}
	err = pglogrepl.StartReplication(ctx, s.repl, repl.Slot, progress.AppliedLSN, pglogrepl.StartReplicationOptions{PluginArgs: args})
	if err != nil {
		// A lost slot is no reason to retry for ever: say so, and what to do.
		if lost := pg.CheckSlot(ctx, s.source, repl.Slot); errors.Is(lost, pg.ErrSlotLost) {
			return lost
		}
		return fmt.Errorf("start streaming from slot %s at %s: %w", repl.Slot, progress.AppliedLSN, err)
	}
	switch phase, _, err := state.Phase(ctx, s.target); {
	case err != nil:
		return err
	case state.CutOver(phase):
		return ErrCutOver
	case phase != state.PhaseCutover: // a cutover in progress keeps its phase
		if err := state.SetPhase(ctx, s.target, state.PhaseStreaming); err != nil {
			return err
		}
	}
	s.opts.Logger.Info("streaming changes", "slot", repl.Slot, "from", progress.AppliedLSN)
	return s.loop(ctx)
}

func (s *session) connect(ctx context.Context) error {
	var err error
	if s.repl, err = pg.ConnectReplication(ctx, s.opts.Source, "pgleap_stream"); err != nil {
		return err
	}
	cfg, err := pg.ParseConfig(pg.Source, s.opts.Source)
	if err != nil {
		return err
	}
	cfg.RuntimeParams["search_path"] = ""
	if s.source, err = pg.ConnectConfig(ctx, pg.Source, cfg); err != nil {
		return err
	}
	targetCfg, err := pg.ParseConfig(pg.Target, s.opts.Target)
	if err != nil {
		return err
	}
	for k, v := range ApplySettings {
		targetCfg.RuntimeParams[k] = v
	}
	if s.target, err = pg.ConnectConfig(ctx, pg.Target, targetCfg); err != nil {
		return err
	}
	if s.prefetch, err = startPrefetcher(ctx, targetCfg, s.opts.Logger); err != nil && ctx.Err() == nil {
		s.opts.Logger.Warn("no second target session to read rows ahead of the apply: the apply goes on without; "+
			"if the target refused for lack of connections, raising max_connections (or the role's limit) by one lets pgleap read ahead", "reason", err.Error())
	}
	return nil
}

func (s *session) close() {
	// A target that stops answering must not hold the stream's end forever.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if s.spill != nil {
		s.spill.close()
	}
	if s.applier != nil {
		s.applier.rollback(ctx)
	}
	if s.prefetch != nil {
		s.prefetch.stop(ctx)
		if s.applier != nil {
			s.applier.Stats.Prefetched += s.prefetch.rows.Load()
		}
	}
	if s.repl != nil {
		s.repl.Close(ctx)
	}
	if s.source != nil {
		s.source.Close(ctx)
	}
	if s.target != nil {
		s.target.Close(ctx)
	}
}

// loop receives until an error. It never blocks past the next thing due: a group to commit
// or a status to send.
func (s *session) loop(ctx context.Context) error {
	s.streaming = true
	s.nextStatus = time.Now().Add(s.opts.StatusInterval)
	// Receives wait on a read deadline of the socket rather than on a context: pgconn
	// watches a context with a goroutine hand-off per call, which costs more than decoding
	// the message. Cancelling ctx moves the deadline to now, which ends a wait at once.
	stopWatching := context.AfterFunc(ctx, func() { s.repl.Conn().SetReadDeadline(time.Now()) })
	defer stopWatching()
	defer s.repl.Conn().SetReadDeadline(time.Time{})
	gather := newGathering(s.repl.Conn())
	s.loopStatus, s.loopStatusPos = time.Now(), s.applier.applied
	stopAnswering := make(chan struct{})
	var answering sync.WaitGroup
	applyPID := s.target.PgConn().PID()
	answering.Go(func() { s.answerWhileBusy(ctx, stopAnswering, applyPID) })
	defer func() {
		close(stopAnswering)
		answering.Wait()
	}()
	var readDeadline time.Time
	now := time.Now()
	if err := s.pollHold(ctx, now); err != nil {
		return err
	}
	for {
		deadline := s.nextStatus
		if due, ok := s.applier.groupDue(); ok && due.Before(deadline) {
			deadline = due
		}
		// While gathering a batch, or while a closed group commits and the next waits for
		// it, come back soon: to take what there is, or to hand the next group over.
		// The wait runs from when it was set, not from each message: setting a socket's
		// deadline costs a timer change, which for every message showed in profiles.
		waiting := s.applier.group.open && s.applier.inflight != nil
		if gather.on || waiting {
			soon := now.Add(gatherWait)
			if now.Before(readDeadline) && readDeadline.Before(soon) {
				soon = readDeadline
			}
			if soon.Before(deadline) {
				deadline = soon
			}
		}
		// A deadline already past would make ReceiveMessage return at once without reading:
		// do what is due first.
		if !now.Before(deadline) {
			deadline = now.Add(time.Millisecond)
		}
		s.replMu.Lock()
		if !deadline.Equal(readDeadline) && ctx.Err() == nil {
			if err := s.repl.Conn().SetReadDeadline(deadline); err != nil {
				s.replMu.Unlock()
				return fmt.Errorf("receive from the source: %w", err)
			}
			readDeadline = deadline
		}
		raw, err := s.repl.ReceiveMessage(context.Background())
		s.replMu.Unlock()
		now = time.Now()
		s.applier.now = now
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case err != nil && pgconn.Timeout(err):
			// Less than a batch has come: take what there is, one message at a time.
			if err := gather.set(false); err != nil {
				return err
			}
			// The stream has paused: the open group goes to the target now rather than
			// when it is due, unless the target is still busy with the one before, in
			// which case this one grows until it is not.
			if err := s.applier.reap(); err != nil {
				return err
			}
			if due, ok := s.applier.groupDue(); ok && (s.applier.inflight == nil || !now.Before(due)) {
				if err := s.applier.commitGroup(ctx); err != nil {
					return err
				}
			}
		case err != nil:
			return fmt.Errorf("receive from the source: %w", err)
		default:
			if err := gather.set(true); err != nil {
				return err
			}
			if err := s.receive(ctx, raw); err != nil {
				return err
			}
		}
		if err := s.statusIfDue(ctx, now); err != nil {
			return err
		}
		if err := s.pollHold(ctx, now); err != nil {
			return err
		}
	}
}

// receive handles one message of the replication connection.
func (s *session) receive(ctx context.Context, raw pgproto3.BackendMessage) error {
	switch msg := raw.(type) {
	case *pgproto3.ErrorResponse:
		return fmt.Errorf("stream from the source: %w", pgconn.ErrorResponseToPgError(msg))
	case *pgproto3.CopyData:
		return s.handle(ctx, msg.Data)
	case *pgproto3.CopyDone, *pgproto3.CommandComplete, *pgproto3.ReadyForQuery:
		// The walsender ends the stream when its server shuts down (a fast shutdown sends
		// CopyDone, then CommandComplete): the source goes away, and the stream resumes when
		// it is back.
		return errSourceEndedStream
	case *pgproto3.NoticeResponse:
		// A server may send a notice or a warning at any time (seen during a source's fast
		// shutdown): it is said, not a reason to stop.
		s.opts.Logger.Warn("the source says", "severity", msg.Severity, "message", msg.Message, "detail", msg.Detail)
		return nil
	case *pgproto3.ParameterStatus:
		return nil // a setting of the session changed (SIGHUP): nothing the stream uses
	}
	return fmt.Errorf("stream from the source: unexpected message %T", raw)
}

// statusIfDue sends the source a status when one is due, moved or not: a walsender that
// hears nothing for wal_sender_timeout ends the connection, which a long transaction being
// applied must not cause.
func (s *session) statusIfDue(ctx context.Context, now time.Time) error {
	if err := s.applier.reap(); err != nil {
		return err
	}
	if now.Before(s.nextStatus) {
		return nil
	}
	idle := s.applier.cur == nil && !s.applier.group.open && s.applier.inflight == nil
	if err := s.persistIdle(ctx); err != nil {
		return err
	}
	if idle {
		if err := s.applier.markInStep(ctx, s.source); err != nil {
			return err
		}
	}
	if err := s.sendStatus(ctx, idle); err != nil {
		return err
	}
	s.nextStatus = time.Now().Add(s.opts.StatusInterval)
	return nil
}

func (s *session) handle(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("parse keepalive: %w", err)
		}
		s.advanceIdle(ka.ServerWALEnd)
		if err := s.holdIfIdleAt(ctx); err != nil {
			return err
		}
		if ka.ReplyRequested {
			return s.sendStatus(ctx, false)
		}
		return nil
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("parse WAL data: %w", err)
		}
		return s.apply(ctx, xld.WALData)
	}
	return nil
}

// apply handles one pgoutput message: blocks of streamed transactions go to the spill
// until their commit, the rest is applied at once.
func (s *session) apply(ctx context.Context, walData []byte) error {
	if s.spill != nil && len(walData) > 0 {
		switch walData[0] {
		case 'S', 'E', 'c', 'A':
			return s.streamControl(ctx, walData)
		}
		if s.inStream {
			if len(walData) < 5 {
				return fmt.Errorf("decode streamed message %q: %w", walData[0], ErrMalformed)
			}
			// Inside a block every message carries its (sub)transaction's xid after its
			// type; without it, it reads as protocol version 1 does.
			subxid := binary.BigEndian.Uint32(walData[1:5])
			if walData[0] == 'R' || walData[0] == 'Y' {
				// pgoutput describes a relation once per transaction, tagged with the
				// subtransaction that first touched it: kept under the transaction itself,
				// the description survives that subtransaction's rollback.
				subxid = s.streamXid
			}
			msg := append([]byte{walData[0]}, walData[5:]...)
			return s.spill.add(s.streamXid, subxid, msg)
		}
	}
	return s.applyMessage(ctx, walData)
}

func (s *session) streamControl(ctx context.Context, walData []byte) error {
	msg, err := parseV2(walData)
	if err != nil {
		return fmt.Errorf("decode stream message %q: %w", walData[0], err)
	}
	switch m := msg.(type) {
	case *pglogrepl.StreamStartMessageV2:
		s.inStream, s.streamXid = true, m.Xid
	case *pglogrepl.StreamStopMessageV2:
		s.inStream = false
	case *pglogrepl.StreamAbortMessageV2:
		s.spill.abort(m.Xid, m.SubXid)
	case *pglogrepl.StreamCommitMessageV2:
		if err := s.holdBefore(ctx, m.CommitLSN); err != nil {
			return err
		}
		if err := s.applier.begin(Begin{Xid: m.Xid, CommitLSN: m.CommitLSN, CommitTime: m.CommitTime}); err != nil {
			return err
		}
		err := s.spill.replay(m.Xid, func(msg []byte) error {
			if err := s.applyMessage(ctx, msg); err != nil {
				return err
			}
			return s.statusIfDue(ctx, time.Now())
		})
		if err != nil {
			return err
		}
		if err := s.applier.commit(ctx, Commit{CommitLSN: m.CommitLSN, EndLSN: m.TransactionEndLSN, CommitTime: m.CommitTime}); err != nil {
			return err
		}
		s.progressed = true
	}
	return nil
}

func (s *session) applyMessage(ctx context.Context, walData []byte) error {
	msg, err := s.decoder.Decode(walData)
	if err != nil {
		return err
	}
	switch m := msg.(type) {
	case *Relation:
		s.applier.forget(m)
		if isDDLLog(m) || !s.applier.selects(m) {
			return nil // the log is read, not written; a table created since that the migration does not select is left
		}
		types, err := sourceTypes(ctx, s.source, m)
		if err != nil {
			return err
		}
		if err := s.applier.flushBatch(ctx); err != nil {
			return err
		}
		return s.applier.checkRelation(ctx, m, types)
	case Begin:
		if err := s.holdBefore(ctx, m.CommitLSN); err != nil {
			return err
		}
		return s.applier.begin(m)
	case Change:
		if m.Kind == Truncate {
			m.Truncated = slices.DeleteFunc(m.Truncated, func(rel *Relation) bool { return isDDLLog(rel) || !s.applier.selects(rel) })
			if len(m.Truncated) == 0 {
				return nil
			}
		} else if isDDLLog(m.Rel) {
			return s.applier.applyDDL(ctx, &m)
		} else if !s.applier.selects(m.Rel) {
			s.applier.Stats.Skipped++
			return nil
		}
		return s.applier.apply(ctx, &m)
	case Commit:
		if err := s.applier.commit(ctx, m); err != nil {
			return err
		}
		s.progressed = true
	}
	return nil
}

// advanceIdle moves the applied position to a keepalive's WAL position when everything
// received is applied, committing or in the open group and no transaction is half
// received: the WAL before that position holds nothing more to apply (transactions of
// other databases or of unpublished tables). Nothing is written for it now: the open group
// records it when it commits, a committing group's position is moved to it once the group
// has committed, and an idle stream records it when its status is due (persistIdle).
// Reporting it to the source before it is recorded is safe: a restart from the older
// recorded position finds nothing to apply in between.
//
// A keepalive's time says nothing of how far behind the walsender is, so it is not what
// the target is in step with: the idle stream takes its own mark of the source for that
// (markInStep), and records its time once the applied position has reached it. A quiet
// database on a busy server then does not look ever further behind since its last commit.
func (s *session) advanceIdle(walEnd pglogrepl.LSN) {
	a := s.applier
	switch {
	case a.cur != nil || walEnd <= a.applied:
	case a.group.open:
		a.group.idleEnd = max(a.group.idleEnd, walEnd)
	case a.inflight != nil:
		a.inflightIdleEnd = max(a.inflightIdleEnd, walEnd)
	default:
		a.applied = walEnd
	}
}

// persistIdle records, at most once per status, a position advanced while idle, or the
// time of a mark of the source the applied position has reached (on a quiet server the
// position does not move, and the target is in step as of each mark).
func (s *session) persistIdle(ctx context.Context) error {
	a := s.applier
	if a.group.open || a.cur != nil || a.inflight != nil {
		return nil
	}
	asOf := a.inStepAsOf()
	if a.applied <= a.recorded && asOf.IsZero() {
		return nil
	}
	err := pgx.BeginFunc(ctx, a.conn, func(tx pgx.Tx) error { return state.RecordApplied(ctx, tx, a.applied, asOf, 0, 0) })
	if err != nil {
		return err
	}
	a.recorded = a.applied
	return nil
}

// sendStatus tells the source what the target has durably applied; replyRequested asks
// for a keepalive back, which is how an idle stream learns it may move on.
func (s *session) sendStatus(ctx context.Context, replyRequested bool) error {
	s.replMu.Lock()
	defer s.replMu.Unlock()
	pos := s.applier.applied
	if err := s.writeStatus(ctx, pos, replyRequested); err != nil {
		return err
	}
	s.loopStatus, s.loopStatusPos = time.Now(), pos
	return nil
}

// writeStatus sends a status with pos; the caller holds replMu.
func (s *session) writeStatus(ctx context.Context, pos pglogrepl.LSN, replyRequested bool) error {
	err := pglogrepl.SendStandbyStatusUpdate(ctx, s.repl, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pos, WALFlushPosition: pos, WALApplyPosition: pos, ReplyRequested: replyRequested,
	})
	if err != nil {
		return fmt.Errorf("send the applied position to the source: %w", err)
	}
	return nil
}

// answerWhileBusy tells the source again the position the loop last sent whenever the
// source has heard nothing for two status intervals, until stop. The loop then waits for the target: a
// lock another session holds there, a long statement, a schema change rewriting a table.
// A walsender that hears nothing for wal_sender_timeout (60 s by default) ends the stream,
// which would have to start again from the last recorded position, its WAL decoded again.
// A wait of waitWarning status intervals is said once, with what holds up the apply
// session (applyPID) on the target.
func (s *session) answerWhileBusy(ctx context.Context, stop <-chan struct{}, applyPID uint32) {
	ticker := time.NewTicker(s.opts.StatusInterval)
	defer ticker.Stop()
	warned := false
	var answered time.Time // when it last told the source itself
	for {
		select {
		case <-stop:
			return
		case <-ticker.C:
		}
		s.replMu.Lock()
		var err error
		if min(time.Since(s.loopStatus), time.Since(answered)) >= 2*s.opts.StatusInterval {
			if err = s.writeStatus(ctx, s.loopStatusPos, false); err == nil {
				answered = time.Now()
			}
		}
		waited := time.Since(s.loopStatus)
		s.replMu.Unlock()
		if err != nil {
			// The loop meets the broken connection at its next receive.
			s.opts.Logger.Debug("could not tell the source where the stream stands while the target is busy", "err", err)
			return
		}
		switch {
		case waited < waitWarning*s.opts.StatusInterval:
			warned = false
		case !warned:
			warned = true
			s.opts.Logger.Warn("the apply is waiting for the target; it goes on once the target lets it",
				"waited", waited.Round(time.Second), "held up by", s.targetBlockers(ctx, applyPID))
		}
	}
}

// waitWarning is how many status intervals the apply may wait for the target before it is
// said (20 s by default).
const waitWarning = 20

// targetBlockers says which sessions of the target block the apply session, for a
// warning; it reads them on a connection of its own, the apply session's being busy.
func (s *session) targetBlockers(ctx context.Context, applyPID uint32) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pg.Connect(ctx, pg.Target, s.opts.Target)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	defer conn.Close(ctx)
	var blockers []string
	var prepared bool // a prepared transaction's locks show as process 0
	err = conn.QueryRow(ctx, `SELECT coalesce((SELECT array_agg(format('pid %s (%s, %s for %s: %s)', pid, usename, state,
				date_trunc('second', now() - coalesce(xact_start, query_start)), left(query, 200)) ORDER BY pid)
			FROM pg_catalog.pg_stat_activity WHERE pid = ANY (b.pids)), '{}'), 0 = ANY (b.pids)
		FROM (SELECT pg_catalog.pg_blocking_pids($1) AS pids) b`, int32(applyPID)).Scan(&blockers, &prepared)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	if prepared {
		blockers = append(blockers, "a prepared transaction (pg_prepared_xacts: COMMIT PREPARED or ROLLBACK PREPARED ends it)")
	}
	if len(blockers) == 0 {
		return "no other session: a long statement or commit of its own"
	}
	return strings.Join(blockers, "; ")
}

// sourceTypes are the declared types of a relation's columns on the source, as
// format_type writes them with an empty search_path (qualified outside pg_catalog).
func sourceTypes(ctx context.Context, source *pgx.Conn, rel *Relation) ([]string, error) {
	oids := make([]uint32, len(rel.Columns))
	mods := make([]int32, len(rel.Columns))
	for i, c := range rel.Columns {
		oids[i], mods[i] = c.TypeOID, c.TypeMod
	}
	var types []string
	err := source.QueryRow(ctx, `SELECT coalesce(array_agg(pg_catalog.format_type(t, nullif(m, -1)) ORDER BY o), '{}')
		FROM unnest($1::oid[], $2::int[]) WITH ORDINALITY AS c(t, m, o)`, oids, mods).Scan(&types)
	if err != nil {
		return nil, fmt.Errorf("read column types of %s on the source: %w", rel.QualifiedName(), err)
	}
	return types, nil
}

// syncLSNs maps each copied table read at a later snapshot than the start of streaming to
// that snapshot's LSN; a partitioned table published through its root maps too, from its
// partitions (which a following copy reads at one snapshot per partitioned table).
func syncLSNs(ctx context.Context, source, target *pgx.Conn, start pglogrepl.LSN) (map[string]pglogrepl.LSN, error) {
	items, err := state.CopyPlan(ctx, target)
	if err != nil {
		return nil, err
	}
	tables, err := catalog.Tables(ctx, source)
	if err != nil {
		return nil, fmt.Errorf("list source tables: %w", err)
	}
	roots := catalog.PartitionRoots(tables)
	skip := map[string]pglogrepl.LSN{}
	for _, i := range items {
		if !i.Finished() {
			return nil, fmt.Errorf("stream changes: %s is not copied yet: run pgleap migrate to finish the copy first", pg.QualifiedName(i.Schema, i.Table))
		}
		if i.SyncLSN <= start {
			continue
		}
		// Changes arrive as the partition's (on 12) or as its root's (from 13 on).
		name := pg.QualifiedName(i.Schema, i.Table)
		skip[name] = max(skip[name], i.SyncLSN)
		if root := roots[name]; root != "" {
			skip[root] = max(skip[root], i.SyncLSN)
		}
	}
	return skip, nil
}
