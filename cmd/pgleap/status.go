package main

import (
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgleap/pgleap/internal/monitor"
)

func init() { commands = append(commands, newStatusCommand) }

func newStatusCommand(c *cli) *cobra.Command {
	var sample time.Duration
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show where a migration stands: phase, tables, applied position, lag",
		Long: `status reads the migration's state from the target (over a read-only session): its phase
(schema, copying, indexing, copied, streaming), each table's copy, the source position
applied so far and the target guard. With --source (or PGLEAP_SOURCE) it also measures the
lag in bytes and seconds and the WAL the source keeps for the slot; while streaming it
measures the apply rate over --sample.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
			st, err := monitor.ReadStatus(ctx, target, source, sample)
			if err != nil {
				return err
			}
			return c.output(st, func(w io.Writer) error { return monitor.WriteStatus(w, st) })
		},
	}
	cmd.Flags().DurationVar(&sample, "sample", time.Second, "measure the apply rate over this long while streaming (0: do not)")
	return cmd
}
