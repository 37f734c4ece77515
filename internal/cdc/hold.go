package cdc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/pg"
	"github.com/pgleap/pgleap/internal/state"
)

// Holds stop the apply at a source position, for a command that needs the target exactly
// there: pgleap verify at the position of its source snapshot (every source transaction that
// committed before the snapshot's slot's consistent point applied, none after), pgleap
// cutover at the position where it froze the source's writes. The command asks with HoldAt,
// which records the hold on the target (state.RequestHold): "now" (state.HoldNow) stops the
// apply at the next boundary between source transactions, a position lets it go on up to
// there. The apply looks for holds every holdPoll, answers each (state.AnswerHold) once it
// stands where asked, and waits until the hold is cleared or replaced. Were it past the
// position asked, it says so and goes on.
const (
	holdPoll = 100 * time.Millisecond
	// maxHold bounds the wait for a verify that does not come back (killed, cut off): the
	// apply then clears the hold itself and goes on.
	maxHold = 2 * time.Minute
)

// ErrApplyNotRunning is returned by HoldAt when nothing streams from the migration's slot:
// no apply runs to answer.
var ErrApplyNotRunning = errors.New("pgleap migrate is not streaming changes to the target: start it, and try again (the apply stops for a moment where the command needs it)")

// HoldAt asks the apply to stop at lsn, or at once (state.HoldNow), and waits for its answer:
// held is true when it stands there, false when it had applied past it. pause is how long it
// had stood still for the hold this one replaced. slot is the migration's slot on the source,
// which shows whether an apply runs at all.
func HoldAt(ctx context.Context, source, target *pgx.Conn, slot string, lsn pglogrepl.LSN, timeout time.Duration) (held bool, pause time.Duration, err error) {
	if pause, err = state.RequestHold(ctx, target, lsn); err != nil {
		return false, 0, err
	}
	timeout = cmp.Or(timeout, time.Minute)
	deadline := time.Now().Add(timeout)
	var inactiveSince time.Time
	ticker := time.NewTicker(5 * time.Millisecond)
	defer ticker.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return false, pause, ctx.Err()
		case <-ticker.C:
		}
		_, st, err := state.Hold(ctx, target)
		if err != nil {
			return false, pause, err
		}
		switch st {
		case state.HoldHeld:
			return true, pause, nil
		case state.HoldMissed:
			return false, pause, nil
		case state.HoldNone:
			return false, pause, errors.New("the hold asked of the apply was cleared by someone else: is another pgleap verify or cutover running? try again")
		}
		if i%100 == 0 { // twice a second: is anything applying?
			active, err := pg.SlotActive(ctx, source, slot)
			switch {
			case err != nil:
				return false, pause, err
			case active:
				inactiveSince = time.Time{}
			case inactiveSince.IsZero():
				inactiveSince = time.Now()
			case time.Since(inactiveSince) > 5*time.Second:
				return false, pause, ErrApplyNotRunning
			}
		}
		if time.Now().After(deadline) {
			return false, pause, fmt.Errorf("the apply did not reach source position %s within %s: it may lag far behind (see pgleap status); try again later or wait longer", lsn, timeout)
		}
	}
}

// pendingHold is a hold the apply has taken in and not reached yet.
type pendingHold struct {
	asked pglogrepl.LSN // as recorded on the target, to answer
	// before: the apply stops before a source transaction that committed at or after it; 0
	// when no hold is pending.
	before pglogrepl.LSN
}

// pollHold looks for a hold every holdPoll, and before the first message of a session.
func (s *session) pollHold(ctx context.Context, now time.Time) error {
	if now.Before(s.nextHoldPoll) {
		return nil
	}
	s.nextHoldPoll = now.Add(holdPoll)
	a := s.applier
	if err := a.reap(); err != nil {
		return err
	}
	if a.inflight != nil || a.tx != nil || a.cur != nil {
		// The target connection is busy, or a transaction is half received (its commit
		// position would not count in the check of takeHold): look again at the next poll.
		return nil
	}
	lsn, st, err := state.Hold(ctx, a.conn)
	if err != nil {
		return err
	}
	// Held, but not by this session (it is not holding): the apply that held stopped (a lost
	// connection, a crash) with verify still reading the target as it was. Nothing may be
	// applied past it then either: the hold is taken again.
	if st != state.HoldPending && st != state.HoldHeld {
		s.hold = pendingHold{}
		return nil
	}
	if s.hold.before == 0 || s.hold.asked != lsn {
		if err := s.takeHold(ctx, lsn); err != nil {
			return err
		}
	}
	if s.hold.before != 0 && a.cur == nil && !a.group.open {
		// Idle, the stream tells where the source stands only when asked: ask now rather
		// than at the next status, which can be a second away.
		if err := s.sendStatus(ctx, true); err != nil {
			return err
		}
	}
	return s.holdIfIdleAt(ctx)
}

// takeHold takes in the hold asked at lsn; at once answers that it is missed when the apply
// is past it.
func (s *session) takeHold(ctx context.Context, lsn pglogrepl.LSN) error {
	a := s.applier
	switch {
	case lsn == state.HoldNow:
		s.hold = pendingHold{asked: lsn, before: 1} // the next transaction, whatever it is
	case a.lastCommitLSN >= lsn:
		s.hold = pendingHold{}
		s.opts.Logger.Info("a verification asked to stop at a position already applied: it will ask again", "at", lsn)
		return state.AnswerHold(ctx, a.conn, lsn, false)
	default:
		s.hold = pendingHold{asked: lsn, before: lsn}
	}
	return nil
}

// holdBefore holds before a source transaction that committed at or after the hold: the
// ones before it are all applied or in the open group.
func (s *session) holdBefore(ctx context.Context, commitLSN pglogrepl.LSN) error {
	for s.hold.before != 0 && commitLSN >= s.hold.before {
		if err := s.holdNow(ctx); err != nil {
			return err
		}
	}
	return nil
}

// holdIfIdleAt holds when no transaction is half received and the stream has told a
// position at or past the hold: nothing before the hold is left to receive.
func (s *session) holdIfIdleAt(ctx context.Context) error {
	a := s.applier
	for s.hold.before != 0 && a.cur == nil && max(a.applied, a.group.idleEnd, a.inflightIdleEnd) >= s.hold.before {
		if err := s.holdNow(ctx); err != nil {
			return err
		}
	}
	return nil
}

// holdNow commits what is open, says the apply holds, and waits until the hold is cleared or
// replaced, telling the source meanwhile that the connection is alive.
func (s *session) holdNow(ctx context.Context) error {
	a := s.applier
	asked := s.hold.asked
	s.hold = pendingHold{}
	if err := a.commitGroup(ctx); err != nil {
		return err
	}
	if err := a.settle(); err != nil {
		return err
	}
	if err := state.AnswerHold(ctx, a.conn, asked, true); err != nil {
		return err
	}
	start := time.Now()
	s.opts.Logger.Debug("holding for a verification", "at", asked)
	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
		current, st, err := state.Hold(ctx, a.conn)
		if err != nil {
			return err
		}
		switch {
		case st == state.HoldPending && current == asked:
			// Asked again at the same position (nothing was written since): it stands there.
			if err := state.AnswerHold(ctx, a.conn, asked, true); err != nil {
				return err
			}
		case st == state.HoldNone:
			// A cutover holds the apply too, and ends it for good once the target took over.
			if phase, _, err := state.Phase(ctx, a.conn); err != nil || state.CutOver(phase) {
				return cmp.Or(err, ErrCutOver)
			}
			s.opts.Logger.Debug("hold released: applying again", "held", time.Since(start).Round(time.Millisecond))
			return nil
		case current != asked:
			return s.takeHold(ctx, current)
		case time.Since(start) > maxHold:
			// A cutover holds as long as it needs: it undoes itself if it fails.
			if phase, _, err := state.Phase(ctx, a.conn); err != nil || phase == state.PhaseCutover {
				if err != nil {
					return err
				}
				break
			}
			s.opts.Logger.Warn("a verification held the apply for too long: going on without it", "at", asked, "held", maxHold)
			return state.ReleaseHoldAt(ctx, a.conn, asked)
		}
		if err := s.statusIfDue(ctx, time.Now()); err != nil {
			return fmt.Errorf("while holding for a verification: %w", err)
		}
	}
}
