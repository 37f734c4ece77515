package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/pgleap/pgleap/internal/assess"
	"github.com/pgleap/pgleap/internal/config"
	"github.com/pgleap/pgleap/internal/monitor"
	"github.com/pgleap/pgleap/internal/pg"
)

// version is set at build time with -ldflags "-X main.version=..."; otherwise the module's
// build information supplies it.
var version = ""

// Exit codes, the same for every command.
const (
	exitOK        = 0 // success
	exitAnswerNo  = 1 // ran, and the answer is no: blockers found, data differs
	exitCannotRun = 2 // bad flags, unreachable server, anything that stopped the command
)

// answerNoError is returned by a command that ran to the end with a negative answer, after
// it has printed its results.
type answerNoError struct{ summary string }

func (e *answerNoError) Error() string { return e.summary }

// usageError is a mistake in the command line itself.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() + ": see pgleap --help" }
func (e *usageError) Unwrap() error { return e.err }

// cli holds what every command shares: the resolved connection settings, the output mode
// and where output goes.
type cli struct {
	configPath string
	flags      config.Config
	json       bool
	logLevel   string
	logFormat  string
	cpuProfile string
	// stopProfile ends the CPU profile started for --cpu-profile.
	stopProfile func() error

	stdout, stderr io.Writer
	getenv         func(string) string
	logger         *slog.Logger
	// events keeps what the logger warns about, for the state (see monitor.EventLog).
	events *monitor.EventLog
	// args is the command line, run again once per database over several (databases.go);
	// perDB is set in each of those runs.
	args      []string
	databases databaseFlags
	perDB     *databaseRun
}

// connections resolves --source/--target, then the environment, then --config, and checks
// that every side the command needs has a connection string.
func (c *cli) connections(sides ...string) (config.Config, error) {
	var file config.Config
	if c.configPath != "" {
		var err error
		if file, err = config.Load(c.configPath); err != nil {
			return config.Config{}, &usageError{err}
		}
	}
	resolved := config.Resolve(c.flags, file, c.getenv)
	if err := resolved.Require(sides...); err != nil {
		return config.Config{}, &usageError{err}
	}
	if c.perDB != nil {
		// One database of several: the servers' connection strings, that database on each.
		if resolved.Source != "" {
			resolved.Source = pg.WithDatabase(resolved.Source, c.perDB.name)
		}
		if resolved.Target != "" {
			resolved.Target = pg.WithDatabase(resolved.Target, c.perDB.name)
		}
		resolved.Tables = config.TablesOf(c.flags, file, c.perDB.name)
	}
	return resolved, nil
}

// connectReadOnly opens a connection on which every transaction is read-only, for commands
// that promise to change nothing.
func (c *cli) connectReadOnly(ctx context.Context, side pg.Side, connString string) (*pgx.Conn, error) {
	cfg, err := pg.ParseConfig(side, connString)
	if err != nil {
		return nil, &usageError{err}
	}
	for name, value := range assess.ReadOnlySettings {
		cfg.RuntimeParams[name] = value
	}
	c.logger.Debug("connecting", "side", side, "conn", config.Redact(connString))
	return pg.ConnectConfig(ctx, side, cfg)
}

// connectReadOnlyBoth opens a read-only connection to each side, the source first; with an
// empty source connection string, only the target (source is nil). close closes them.
func (c *cli) connectReadOnlyBoth(ctx context.Context, sourceConn, targetConn string) (source, target *pgx.Conn, close func(), err error) {
	if sourceConn != "" {
		if source, err = c.connectReadOnly(ctx, pg.Source, sourceConn); err != nil {
			return nil, nil, nil, err
		}
	}
	if target, err = c.connectReadOnly(ctx, pg.Target, targetConn); err != nil {
		if source != nil {
			source.Close(ctx)
		}
		return nil, nil, nil, err
	}
	return source, target, func() {
		if source != nil {
			source.Close(context.Background())
		}
		target.Close(context.Background())
	}, nil
}

// addTableFlags adds --include and --exclude, the table selection every stage shares.
// Patterns given there replace the config file's (config.Resolve).
func (c *cli) addTableFlags(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&c.flags.Tables.Include, "include", nil, "only tables matching this glob on schema.table (repeatable; default all)")
	cmd.Flags().StringArrayVar(&c.flags.Tables.Exclude, "exclude", nil, "leave out tables matching this glob on schema.table (repeatable)")
}

func newRootCommand(c *cli) *cobra.Command {
	root := &cobra.Command{
		Use:   "pgleap",
		Short: "Upgrade PostgreSQL to a newer major version with seconds of write downtime",
		Long: `pgleap upgrades a PostgreSQL database to a newer major version with seconds of write
downtime. It copies the schema and the data into a new server, keeps the new server in
sync with logical replication while the old one stays in production, proves the two
identical, then switches over, and can switch back.

Connections: --source and --target take libpq keyword/value strings
('host=db1 dbname=shop user=migrator') or postgres:// URLs. Without them pgleap reads
PGLEAP_SOURCE and PGLEAP_TARGET, then the keys source: and target: of the --config file.
The usual PG* environment variables (PGPASSWORD, PGSSLMODE, ...) fill in what is left out.

Exit status: 0 success, 1 ran and the answer is no (blockers found, data differs),
2 could not run (bad flags, unreachable server).`,
		Version:       buildVersion(),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
				return &usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", c.logLevel)}
			}
			options := &slog.HandlerOptions{Level: level}
			var handler slog.Handler
			switch c.logFormat {
			case "text":
				handler = slog.NewTextHandler(c.stderr, options)
			case "json":
				handler = slog.NewJSONHandler(c.stderr, options)
			default:
				return &usageError{fmt.Errorf("--log-format %q: want text or json", c.logFormat)}
			}
			c.events = monitor.NewEventLog()
			c.logger = slog.New(c.events.Handler(handler))
			if c.cpuProfile != "" {
				return c.startProfile()
			}
			return nil
		},
	}
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	flags := root.PersistentFlags()
	flags.StringVar(&c.flags.Source, "source", "", "source server: libpq connection string or postgres:// URL (env "+config.SourceEnv+")")
	flags.StringVar(&c.flags.Target, "target", "", "target server: libpq connection string or postgres:// URL (env "+config.TargetEnv+")")
	flags.StringVar(&c.configPath, "config", "", "read source:, target: and other settings from this pgleap.yaml")
	flags.BoolVar(&c.json, "json", false, "print results as JSON")
	flags.StringVar(&c.logLevel, "log-level", "info", "log level on stderr: debug, info, warn or error")
	flags.StringVar(&c.logFormat, "log-format", "text", "log format on stderr: text (key=value lines for people) or json (one object per line, for log collectors)")
	// For the people making pgleap faster: where a run spends its CPU, for go tool pprof.
	flags.StringVar(&c.cpuProfile, "cpu-profile", "", "write a CPU profile of the run to this file")
	flags.MarkHidden("cpu-profile")
	for _, add := range commands {
		sub := add(c)
		if slices.Contains(severalDatabaseCommands, sub.Name()) {
			c.addDatabaseFlags(sub)
			single := sub.RunE
			sub.RunE = func(cmd *cobra.Command, args []string) error {
				if c.severalDatabases() {
					return c.runDatabases(cmd)
				}
				return single(cmd, args)
			}
		}
		root.AddCommand(sub)
	}
	return root
}

// severalDatabaseCommands take --databases and --all-databases.
var severalDatabaseCommands = []string{"check", "migrate", "status", "verify", "cutover", "rollback", "cleanup"}

func (c *cli) startProfile() error {
	f, err := os.Create(c.cpuProfile)
	if err != nil {
		return &usageError{fmt.Errorf("--cpu-profile: %w", err)}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return &usageError{fmt.Errorf("--cpu-profile: %w", err)}
	}
	c.stopProfile = func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}
	return nil
}

// commands lists the subcommands; each file that defines one registers it here from init,
// so that only commands that exist are offered.
var commands []func(*cli) *cobra.Command

// run executes one pgleap command line and returns its exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	return runWith(ctx, args, stdout, stderr, getenv, nil)
}

// runWith is run, for one database of several when perDB is set.
func runWith(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string, perDB *databaseRun) int {
	c := &cli{stdout: stdout, stderr: stderr, getenv: getenv, args: args, perDB: perDB}
	root := newRootCommand(c)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if c.stopProfile != nil {
		err = errors.Join(err, c.stopProfile())
	}
	if err == nil {
		return exitOK
	}
	// One line, no stack trace: the message names the object and what to do.
	fmt.Fprintln(stderr, "pgleap: "+strings.TrimSpace(strings.ReplaceAll(err.Error(), "\n", " ")))
	var no *answerNoError
	if errors.As(err, &no) {
		return exitAnswerNo
	}
	if isUnknownCommand(err) {
		fmt.Fprintln(stderr, "see pgleap --help for the commands")
	}
	return exitCannotRun
}

func isUnknownCommand(err error) bool {
	return strings.HasPrefix(err.Error(), "unknown command")
}

func buildVersion() string {
	if version != "" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := info.Main.Version
	for _, setting := range info.Settings {
		if setting.Key == "vcs.revision" && len(setting.Value) >= 12 {
			v += " (" + setting.Value[:12] + ")"
		}
	}
	return v
}
