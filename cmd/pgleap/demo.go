package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgleap/pgleap/internal/demo"
)

func init() { commands = append(commands, newDemoCommand) }

func newDemoCommand(c *cli) *cobra.Command {
	opts := demo.Options{Dir: ".demo", SourceMajor: 13, TargetMajor: 17, SourcePort: 15413, TargetPort: 15417,
		PgBouncerPort: 15432, StatusPort: 15480, Scale: 1, Clients: 4, InstallScript: "scripts/install-postgres.sh"}
	var clean bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Watch a whole upgrade on this machine: two servers, a live application, check to cutover",
		Long: `demo shows pgleap's whole journey on this machine, in a few minutes, without a question asked.

It starts an old PostgreSQL (--source-major, 13) and a new one (--target-major, 17) under
--dir, installed by the project's scripts/install-postgres.sh, with PgBouncer in front of the
old one; loads a sporting-events ticketing database; and starts an application that sells
and transfers tickets through PgBouncer. Then it runs pgleap check, migrate (in the
background, with its status page), status, verify while the application writes, cutover
through PgBouncer (printing the longest wait the application saw), shows the application
writing to the new server while the old one still receives every change, and verifies the
way back.

The servers stop at the end, their data kept in --dir; --keep leaves them running and says
how to connect; --clean stops whatever a demo left running and removes --dir. The demo only
touches --dir and its own ports on 127.0.0.1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if clean {
				if err := demo.Clean(opts.Dir); err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "removed %s and stopped what ran from it\n", opts.Dir)
				return nil
			}
			if opts.Scale <= 0 || opts.Clients <= 0 {
				return &usageError{errors.New("--scale and --clients: want positive numbers")}
			}
			opts.Out, opts.Progress = c.stdout, c.stderr
			opts.Pgleap = func(ctx context.Context, stdout, stderr io.Writer, args ...string) int {
				return run(ctx, args, stdout, stderr, c.getenv)
			}
			started := time.Now()
			if _, err := demo.Run(cmd.Context(), opts); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "\nThe demo took %s.\n", time.Since(started).Round(time.Second))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Dir, "dir", opts.Dir, "directory for the servers, PgBouncer and their logs (emptied first)")
	f.BoolVar(&opts.Keep, "keep", false, "leave the servers and PgBouncer running at the end")
	f.BoolVar(&clean, "clean", false, "stop what a demo left running and remove --dir, then exit")
	f.Float64Var(&opts.Scale, "scale", opts.Scale, "size of the sample database (1: a few hundred thousand rows)")
	f.IntVar(&opts.Clients, "clients", opts.Clients, "clients of the application")
	f.IntVar(&opts.SourceMajor, "source-major", opts.SourceMajor, "PostgreSQL major of the old server")
	f.IntVar(&opts.TargetMajor, "target-major", opts.TargetMajor, "PostgreSQL major of the new server")
	f.IntVar(&opts.SourcePort, "source-port", opts.SourcePort, "port of the old server on 127.0.0.1 (0: any free one)")
	f.IntVar(&opts.TargetPort, "target-port", opts.TargetPort, "port of the new server on 127.0.0.1 (0: any free one)")
	f.IntVar(&opts.PgBouncerPort, "pgbouncer-port", opts.PgBouncerPort, "port of PgBouncer on 127.0.0.1 (0: any free one)")
	f.IntVar(&opts.StatusPort, "status-port", opts.StatusPort, "port of pgleap migrate's status page on 127.0.0.1 (0: any free one)")
	f.StringVar(&opts.InstallScript, "install-script", opts.InstallScript, "the script that installs PostgreSQL binaries")
	return cmd
}
