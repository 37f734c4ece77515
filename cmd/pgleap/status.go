package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgleap/pgleap/internal/monitor"
)

func init() { commands = append(commands, newStatusCommand) }

func newStatusCommand(c *cli) *cobra.Command {
	var sample, every time.Duration
	var watch bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show where a migration stands: phase, tables, applied position, lag",
		Long: `status reads the migration's state from the target (over a read-only session): its phase
(schema, copying, indexing, copied, streaming, cutover, cutover-done, reverse-streaming,
rolled-back), each table's copy (units, rows and bytes), the source position applied so far,
the target guard, the last verification and cutover, and the newest problems a running
pgleap migrate logged. With --source (or PGLEAP_SOURCE) it also measures the lag in bytes and
seconds and the WAL the source keeps for the slot, against max_slot_wal_keep_size; while
streaming it measures the apply rate over --sample. It works from any machine that reaches
the target, whether pgleap migrate runs or not.

--watch reads it again every --every until Ctrl-C: redrawn in place on a terminal, one JSON
object per line with --json.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if watch && every <= 0 {
				return &usageError{fmt.Errorf("--every %s: want a positive duration", every)}
			}
			resolved, err := c.connections("target")
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			source, target, closeBoth, err := c.connectReadOnlyBoth(ctx, resolved.Source, resolved.Target)
			if err != nil {
				return err
			}
			defer closeBoth()
			if !watch {
				st, err := monitor.ReadStatus(ctx, target, source, sample)
				if err != nil {
					return err
				}
				return c.output(st, func(w io.Writer) error { return monitor.WriteStatus(w, st) })
			}
			redraw := !c.json && monitor.IsTerminal(c.stdout)
			for {
				started := time.Now()
				st, err := monitor.ReadStatus(ctx, target, source, min(sample, every))
				if ctx.Err() != nil {
					return nil // Ctrl-C
				}
				if err != nil {
					return err
				}
				switch {
				case c.json:
					err = json.NewEncoder(c.stdout).Encode(st)
				case redraw:
					fmt.Fprint(c.stdout, "\033[H\033[2J") // to the top left, then clear the screen
					err = monitor.WriteStatus(c.stdout, st)
				default:
					fmt.Fprintf(c.stdout, "--- %s\n", st.ReadAt.Format(time.RFC3339))
					err = monitor.WriteStatus(c.stdout, st)
				}
				if err != nil {
					return err
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(every - time.Since(started)):
				}
			}
		},
	}
	cmd.Flags().DurationVar(&sample, "sample", time.Second, "measure the apply rate over this long while streaming (0: do not)")
	cmd.Flags().BoolVar(&watch, "watch", false, "read the status again and again until Ctrl-C")
	cmd.Flags().DurationVar(&every, "every", 2*time.Second, "with --watch, how often")
	return cmd
}
