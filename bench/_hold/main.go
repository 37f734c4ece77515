// Scratch: start a source and a target and keep them until killed. Not committed.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/pgleap/pgleap/internal/pgtest"
)

func main() {
	ctx := context.Background()
	settings := map[string]string{"shared_buffers": "2GB", "max_wal_size": "16GB", "min_wal_size": "2GB", "checkpoint_timeout": "30min",
		"maintenance_work_mem": "1GB", "max_parallel_maintenance_workers": "2", "max_worker_processes": "16", "max_replication_slots": "20", "max_wal_senders": "20"}
	src, err := pgtest.Launch(ctx, 13, pgtest.Options{Durable: true, Settings: settings})
	if err != nil {
		panic(err)
	}
	defer src.Stop()
	tgt, err := pgtest.Launch(ctx, 17, pgtest.Options{Durable: true, Settings: settings})
	if err != nil {
		panic(err)
	}
	defer tgt.Stop()
	os.WriteFile("/tmp/hold.env", []byte(fmt.Sprintf("SRC_PORT=%d\nTGT_PORT=%d\n", src.Port, tgt.Port)), 0o644)
	fmt.Println("ready", src.Port, tgt.Port)
	c := make(chan os.Signal, 1)
	signal.Notify(c, os.Interrupt)
	<-c
}
