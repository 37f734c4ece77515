package main

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestCutoverBarrier(t *testing.T) {
	ctx := context.Background()
	run := func(parties int, each func(b *cutoverBarrier, i int) error) []error {
		b := newCutoverBarrier(parties)
		errs := make([]error, parties)
		var wg sync.WaitGroup
		for i := range parties {
			wg.Go(func() { errs[i] = each(b, i) })
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the barrier held a party for ever")
		}
		return errs
	}
	both := func(b *cutoverBarrier, ready bool) error {
		if err := b.Ready(ctx, ready); err != nil {
			return err
		}
		return b.Confirmed(ctx)
	}
	for _, tc := range []struct {
		name     string
		each     func(b *cutoverBarrier, i int) error
		wantErrs int
	}{
		{"all ready", func(b *cutoverBarrier, _ int) error { return both(b, true) }, 0},
		{"one not ready", func(b *cutoverBarrier, i int) error { return both(b, i != 1) }, 3},
		{"one stops before confirming", func(b *cutoverBarrier, i int) error {
			if err := b.Ready(ctx, true); err != nil {
				return err
			}
			if i == 2 {
				time.Sleep(50 * time.Millisecond)
				b.fail("shop")
				return context.Canceled
			}
			return b.Confirmed(ctx)
		}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			failed := 0
			for _, err := range run(3, tc.each) {
				if err != nil {
					failed++
				}
			}
			if failed != tc.wantErrs {
				t.Errorf("%d parties failed, want %d", failed, tc.wantErrs)
			}
		})
	}
}
