package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pgleap/pgleap/internal/assess"
)

func init() { commands = append(commands, newCheckCommand) }

func newCheckCommand(c *cli) *cobra.Command {
	opts := assess.Options{LongTransactionAge: assess.DefaultLongTransactionAge}
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Assess whether a source and target are ready to migrate, changing nothing",
		Long: `check is the assessment a DBA would otherwise do by hand before an upgrade. It reads both
servers, changes nothing on either (its sessions are read-only), and lists what stops the
migration (blockers), what needs a decision (warnings) and what pgleap will take care of
(info), each with the SQL or setting that fixes it.

Exit status: 0 no blockers, 1 blockers found, 2 could not run.`,
		Example: `  pgleap check --source 'host=old-db dbname=shop' --target 'host=new-db dbname=shop'
  pgleap check --config pgleap.yaml --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resolved, err := c.connections("source", "target")
			if err != nil {
				return err
			}
			opts.Tables = resolved.Tables
			if err := opts.Tables.Validate(); err != nil {
				return &usageError{err}
			}
			ctx := cmd.Context()
			source, target, closeBoth, err := c.connectReadOnlyBoth(ctx, resolved.Source, resolved.Target)
			if err != nil {
				return err
			}
			defer closeBoth()

			report, err := assess.Run(ctx, source, target, opts)
			if err != nil {
				return err
			}
			if err := c.output(report, report.WriteText); err != nil {
				return fmt.Errorf("write report: %w", err)
			}
			if n := report.Count(assess.Blocker); n > 0 {
				return &answerNoError{fmt.Sprintf("check found %d blocker(s): the migration cannot start until they are fixed", n)}
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&opts.LongTransactionAge, "long-transaction", opts.LongTransactionAge,
		"report source transactions open at least this long (idle-in-transaction sessions are always reported)")
	c.addTableFlags(cmd)
	return cmd
}
