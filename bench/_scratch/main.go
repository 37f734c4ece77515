// Scratch: time pgleap variants on pgbench scale 100, servers kept between runs. Not committed.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgleap/pgleap/internal/pgtest"
)

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func sql(connString, q string) {
	ctx := context.Background()
	c, err := pgx.Connect(ctx, connString)
	must(err)
	defer c.Close(ctx)
	_, err = c.Exec(ctx, q)
	must(err)
}

func main() {
	ctx := context.Background()
	settings := map[string]string{"shared_buffers": "2GB", "max_wal_size": "16GB", "min_wal_size": "2GB", "checkpoint_timeout": "30min",
		"maintenance_work_mem": "1GB", "max_parallel_maintenance_workers": "2", "max_worker_processes": "16"}
	src, err := pgtest.Launch(ctx, 13, pgtest.Options{Durable: true, Settings: settings})
	must(err)
	defer src.Stop()
	tgt, err := pgtest.Launch(ctx, 17, pgtest.Options{Durable: true, Settings: settings})
	must(err)
	defer tgt.Stop()
	sql(src.ConnString("postgres"), "CREATE DATABASE pgbench")
	t0 := time.Now()
	out, err := exec.Command("pgbench", "-i", "-s", os.Args[1], "-q", src.ConnString("pgbench")).CombinedOutput()
	must(err)
	_ = out
	sql(src.ConnString("pgbench"), "VACUUM ANALYZE")
	fmt.Println("pgbench init", time.Since(t0).Round(time.Second))
	variants := os.Args[2:]
	for i, v := range append([]string{"warmup"}, variants...) {
		db := fmt.Sprintf("t%d", i)
		sql(tgt.ConnString("postgres"), "CREATE DATABASE "+db)
		sql(src.ConnString("postgres"), "CHECKPOINT")
		sql(tgt.ConnString("postgres"), "CHECKPOINT")
		args := []string{"migrate", "--no-follow", "--jobs", "2", "--index-jobs", "2", "--log-level", "debug", "--source", src.ConnString("pgbench"), "--target", tgt.ConnString(db)}
		if v != "warmup" && v != "default" {
			args = append(args, strings.Fields(v)...)
		}
		start := time.Now()
		bin := "bin/pgleap"
		if strings.HasPrefix(v, "BIN=") {
			fields := strings.Fields(v)
			bin = strings.TrimPrefix(fields[0], "BIN=")
			args = append(args[:len(args)-len(fields)], fields[1:]...)
		}
		cmd := exec.Command(bin, args...)
		logs, err := cmd.CombinedOutput()
		el := time.Since(start)
		if err != nil {
			fmt.Println(v, "FAILED", err, string(logs))
			continue
		}
		fmt.Printf("%-40s %.1f s\n", v, el.Seconds())
		os.WriteFile("/tmp/scratch-"+db+".log", logs, 0o644)
		sql(tgt.ConnString("postgres"), "DROP DATABASE "+db)
	}
}
