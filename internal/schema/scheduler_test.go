package schema

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
)

func TestSchedulerOrder(t *testing.T) {
	pk := &task{id: "pk:index", tables: []string{`"public"."a"`}}
	attach := &task{id: "pk", after: []string{"pk:index"}}
	other := &task{id: "b-index", tables: []string{`"public"."b"`}}
	fk := &task{id: "fk", after: []string{"pk"}, tables: []string{`"public"."b"`}}
	validate := &task{id: "fk:validate", after: []string{"fk"}, last: true}
	earlier := &task{id: "done-before"}
	tasks := []*task{validate, pk, attach, other, fk, earlier}

	s := newScheduler(tasks, map[string]bool{"done-before": true})
	if s.alreadyDone != 1 {
		t.Errorf("alreadyDone = %d", s.alreadyDone)
	}
	copied := make(chan [2]string)
	var mu sync.Mutex
	var order []string
	ran := make(chan string)
	go func() {
		// Table a is copied first; b only once a's index is built.
		copied <- [2]string{"public", "a"}
		for id := range ran {
			if id == "pk:index" {
				copied <- [2]string{"public", "b"}
				close(copied)
			}
		}
	}()
	n, err := s.run(context.Background(), 1, copied, func(_ context.Context, t *task) error {
		mu.Lock()
		order = append(order, t.id)
		mu.Unlock()
		ran <- t.id
		return nil
	})
	close(ran)
	if err != nil || n != 5 {
		t.Fatalf("run = %d, %v", n, err)
	}
	if want := []string{"pk:index", "pk", "b-index", "fk", "fk:validate"}; !slices.Equal(order, want) {
		t.Errorf("order = %v, want %v", order, want)
	}
}

func TestSchedulerStopsAtFirstError(t *testing.T) {
	boom := errors.New("boom")
	tasks := []*task{{id: "a"}, {id: "b", after: []string{"a"}}, {id: "c"}}
	s := newScheduler(tasks, nil)
	var ran []string
	var mu sync.Mutex
	_, err := s.run(context.Background(), 1, nil, func(_ context.Context, t *task) error {
		mu.Lock()
		ran = append(ran, t.id)
		mu.Unlock()
		if t.id == "a" {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || slices.Contains(ran, "b") {
		t.Errorf("err = %v, ran %v; want boom and b never run", err, ran)
	}
}
