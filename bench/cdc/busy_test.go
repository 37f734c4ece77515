package main

import (
	"testing"
	"time"
)

func TestBusyTimeline(t *testing.T) {
	r := busyResult{cores: 2, steps: []busyStep{
		{busy: 2, took: 100 * time.Millisecond},
		{busy: 1, took: 100 * time.Millisecond},
		{busy: 2.3, took: 100 * time.Millisecond}, // ticks rounded over the cores
		{busy: 0, took: 50 * time.Millisecond},    // the last, partial step
	}}
	line, idle := r.timeline()
	if line != "█▄█ " || idle != 200*time.Millisecond {
		t.Errorf("timeline = %q, %s idle; want %q, 200ms idle", line, idle, "█▄█ ")
	}
}

func TestCPUTicks(t *testing.T) {
	before, err := cpuTicks()
	if err != nil {
		t.Skipf("no /proc/stat here: %v", err)
	}
	if before.cores < 1 || before.busy <= 0 || before.total < before.busy {
		t.Fatalf("cpuTicks = %+v", before)
	}
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
	}
	after, err := cpuTicks()
	if err != nil {
		t.Fatal(err)
	}
	if busy := after.busyCores(before); busy < 0 || busy > float64(after.cores) {
		t.Fatalf("busy cores %.2f of %d", busy, after.cores)
	}
}
