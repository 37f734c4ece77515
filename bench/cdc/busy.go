package main

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
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
	done chan []float64
}

func sampleBusy() *busySampler {
	s := &busySampler{stop: make(chan struct{}), done: make(chan []float64, 1)}
	go func() {
		var steps []float64
		ticker := time.NewTicker(busyInterval)
		defer ticker.Stop()
		last, err := cpuTicks()
		for err == nil {
			select {
			case <-s.stop:
				s.done <- steps
				return
			case <-ticker.C:
			}
			var now machineTicks
			if now, err = cpuTicks(); err == nil {
				steps = append(steps, now.busyCores(last))
				last = now
			}
		}
		<-s.stop
		s.done <- nil // /proc/stat unreadable: no timeline
	}()
	return s
}

// finish stops sampling and returns the busy cores of each step.
func (s *busySampler) finish() []float64 {
	close(s.stop)
	return <-s.done
}

// machineTicks are /proc/stat's cumulative clock ticks of all cores: busy and in all.
type machineTicks struct{ busy, total int64 }

// busyCores is how many of the machine's cores were busy on average between two readings.
func (t machineTicks) busyCores(before machineTicks) float64 {
	if t.total <= before.total {
		return 0
	}
	return float64(runtime.NumCPU()) * float64(t.busy-before.busy) / float64(t.total-before.total)
}

// cpuTicks reads the first line of /proc/stat: user nice system idle iowait irq softirq
// steal ..., in ticks summed over all cores. Idle and iowait are the idle ones.
func cpuTicks() (machineTicks, error) {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineTicks{}, err
	}
	line, _, _ := bytes.Cut(stat, []byte("\n"))
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
	return t, nil
}

// busyTimeline draws the busy cores of each step, from ' ' (none) to '█' (every core), and
// sums the idle core-seconds: what a drain left unused of the machine.
func busyTimeline(steps []float64, cores int) (line string, idle time.Duration) {
	levels := []rune(" ▁▂▃▄▅▆▇█")
	var b strings.Builder
	for _, busy := range steps {
		frac := min(max(busy/float64(cores), 0), 1)
		b.WriteRune(levels[int(frac*float64(len(levels)-1)+0.5)])
		idle += time.Duration((float64(cores) - min(busy, float64(cores))) * float64(busyInterval))
	}
	return b.String(), idle
}
