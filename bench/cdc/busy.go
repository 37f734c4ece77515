package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// busyInterval is the width of one step of a drain's timeline of busy cores.
const busyInterval = 100 * time.Millisecond

// busySampler records how many of the machine's cores were busy in each busyInterval of a
// drain. Where the per-process CPU times tell how much work a drain took, this tells when:
// a step with one core busy at the start is the walsender alone (the slot's WAL decoded
// again, the follower starting), one at the end is the target alone (the last group).
type busySampler struct {
	stop chan struct{}
	done chan busyResult
}

type busyResult struct {
	steps []busyStep // the last one covers the time since the last full step
	cores int
	err   error
}

// busyStep is how many cores were busy on average for how long.
type busyStep struct {
	busy float64
	took time.Duration
}

func sampleBusy() *busySampler {
	s := &busySampler{stop: make(chan struct{}), done: make(chan busyResult, 1)}
	go func() {
		ticker := time.NewTicker(busyInterval)
		defer ticker.Stop()
		var r busyResult
		last, err := cpuTicks()
		lastAt := time.Now()
		for stopping := false; err == nil && !stopping; {
			select {
			case <-s.stop:
				stopping = true
			case <-ticker.C:
			}
			var now machineTicks
			if now, err = cpuTicks(); err == nil {
				r.steps = append(r.steps, busyStep{busy: now.busyCores(last), took: time.Since(lastAt)})
				last, lastAt = now, time.Now()
			}
		}
		<-s.stop // closed by finish, which waits for the result
		r.cores, r.err = last.cores, err
		s.done <- r
	}()
	return s
}

// finish stops sampling and returns the busy cores of each step.
func (s *busySampler) finish() busyResult {
	close(s.stop)
	return <-s.done
}

// machineTicks are /proc/stat's cumulative clock ticks of all cores, busy and in all, and
// how many cores it lists.
type machineTicks struct {
	busy, total int64
	cores       int
}

// busyCores is how many of the machine's cores were busy on average between two readings.
func (t machineTicks) busyCores(before machineTicks) float64 {
	if t.total <= before.total {
		return 0
	}
	return float64(t.cores) * float64(t.busy-before.busy) / float64(t.total-before.total)
}

// cpuTicks reads the first line of /proc/stat: user nice system idle iowait irq softirq
// steal ..., in ticks summed over all cores. Idle and iowait are the idle ones.
func cpuTicks() (machineTicks, error) {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineTicks{}, err
	}
	line, rest, _ := bytes.Cut(stat, []byte("\n"))
	fields := strings.Fields(string(line))
	if len(fields) < 9 || fields[0] != "cpu" {
		return machineTicks{}, fmt.Errorf("read /proc/stat: unexpected first line %q", line)
	}
	var t machineTicks
	for i, f := range fields[1:9] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return machineTicks{}, fmt.Errorf("read /proc/stat: %w", err)
		}
		t.total += n
		if i != 3 && i != 4 { // idle, iowait
			t.busy += n
		}
	}
	for line := range bytes.SplitSeq(rest, []byte("\n")) {
		if bytes.HasPrefix(line, []byte("cpu")) {
			t.cores++ // cpu0, cpu1, ...: the cores the first line adds up
		}
	}
	return t, nil
}

// timeline draws the busy cores of each step, from ' ' (none) to '█' (every core), and
// sums the idle core-seconds: what a drain left unused of the machine.
func (r busyResult) timeline() (line string, idle time.Duration) {
	levels := []rune(" ▁▂▃▄▅▆▇█")
	cores := float64(max(r.cores, 1))
	var b strings.Builder
	for _, s := range r.steps {
		busy := min(max(s.busy, 0), cores)
		b.WriteRune(levels[int(busy/cores*float64(len(levels)-1)+0.5)])
		idle += time.Duration((cores - busy) * float64(s.took))
	}
	return b.String(), idle
}
