package schema

import (
	"context"
	"fmt"
	"strings"

	"github.com/pgleap/pgleap/internal/pg"
)

// scheduler runs tasks as soon as what they wait for is done: the tasks before them, and the
// copy of the tables they are built on. At most jobs run at once; validations wait until
// nothing else is ready, since they only check what is already built.
type scheduler struct {
	order         []*task
	pendingTasks  map[*task]int
	pendingTables map[*task]int
	dependents    map[string][]*task
	tableWaiters  map[string][]*task
	copied        map[string]bool
	done          map[string]bool
	started       map[*task]bool
	alreadyDone   int
	remaining     int
}

func newScheduler(tasks []*task, done map[string]bool) *scheduler {
	s := &scheduler{
		order: tasks, pendingTasks: map[*task]int{}, pendingTables: map[*task]int{},
		dependents: map[string][]*task{}, tableWaiters: map[string][]*task{},
		copied: map[string]bool{}, done: map[string]bool{}, started: map[*task]bool{},
	}
	known := map[string]bool{}
	for _, t := range tasks {
		known[t.id] = true
	}
	for _, t := range tasks {
		if done[t.id] {
			s.done[t.id] = true
			s.alreadyDone++
		}
	}
	for _, t := range tasks {
		if s.done[t.id] {
			continue
		}
		s.remaining++
		for _, id := range t.after {
			if known[id] && !s.done[id] {
				s.pendingTasks[t]++
				s.dependents[id] = append(s.dependents[id], t)
			}
		}
		for _, table := range t.tables {
			s.pendingTables[t]++
			s.tableWaiters[table] = append(s.tableWaiters[table], t)
		}
	}
	return s
}

func (s *scheduler) tableCopied(table string) {
	if s.copied[table] {
		return
	}
	s.copied[table] = true
	for _, t := range s.tableWaiters[table] {
		s.pendingTables[t]--
	}
}

func (s *scheduler) allTablesCopied() {
	for table := range s.tableWaiters {
		s.tableCopied(table)
	}
}

func (s *scheduler) finish(t *task) {
	s.done[t.id] = true
	s.remaining--
	for _, d := range s.dependents[t.id] {
		s.pendingTasks[d]--
	}
}

// next returns the first ready task in plan order, a validation only when no other is ready.
func (s *scheduler) next() *task {
	var validation *task
	for _, t := range s.order {
		if s.done[t.id] || s.started[t] || s.pendingTasks[t] > 0 || s.pendingTables[t] > 0 {
			continue
		}
		if !t.last {
			return t
		}
		if validation == nil {
			validation = t
		}
	}
	return validation
}

type taskResult struct {
	task *task
	err  error
}

// run executes the tasks; copied delivers each table once its rows are in and is closed
// when the copy is over (nil: every table is copied already). It returns how many tasks ran.
func (s *scheduler) run(ctx context.Context, jobs int, copied <-chan [2]string, run func(context.Context, *task) error) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if copied == nil {
		s.allTablesCopied()
	}
	results := make(chan taskResult, jobs)
	running, ran := 0, 0
	var firstErr error
	for {
		for firstErr == nil && running < jobs {
			t := s.next()
			if t == nil {
				break
			}
			s.started[t] = true
			running++
			go func() { results <- taskResult{t, run(ctx, t)} }()
		}
		if running == 0 {
			if firstErr != nil || s.remaining == 0 {
				return ran, firstErr
			}
			if copied == nil {
				return ran, fmt.Errorf("post-data: %d steps wait on each other or on tables that were not copied (%s): this is a bug in pgleap, please report it", s.remaining, s.stuck())
			}
		}
		select {
		case r := <-results:
			running--
			if r.err != nil {
				if firstErr == nil {
					firstErr = r.err
					cancel() // the others stop; their errors are only echoes of this one
				}
				continue
			}
			ran++
			s.finish(r.task)
		case table, ok := <-copied:
			if !ok {
				copied = nil
				s.allTablesCopied()
				continue
			}
			s.tableCopied(pg.QualifiedName(table[0], table[1]))
		case <-ctx.Done():
			if firstErr == nil {
				firstErr = ctx.Err()
			}
			for ; running > 0; running-- {
				<-results
			}
			return ran, firstErr
		}
	}
}

func (s *scheduler) stuck() string {
	var labels []string
	for _, t := range s.order {
		if !s.done[t.id] && len(labels) < 5 {
			labels = append(labels, t.label)
		}
	}
	return strings.Join(labels, "; ")
}
