/* futurectl: what the command files share. Each command is a CtlCommand: a parse step that turns
 * its own argv (argv[0] is the command name) into its own arguments struct without touching the
 * daemon, a file or a signal (only usage messages and --help are printed), and a run step that
 * connects and does the work. ctl_parse() and ctl_run() are the two halves of main(): the fuzz
 * target tests/fuzz/fuzz-argv.c feeds argument vectors to ctl_parse() alone. Both return the
 * process exit status, one of the EXIT_* codes below and never a negative errno: helpers that
 * return -errno are turned into an exit status by ctl_error(), the one place that maps errors to
 * statuses. Single-threaded; getopt's globals make parsing non-reentrant. */
#pragma once

#include <stdbool.h>

#include "futured/client.h"
#include "macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(futured_as_completed *, futured_as_completed_free);

/* The exit statuses, as `futurectl --help` and the README list them. 69 and up are sysexits.h's. */
#define EXIT_JOB_FAILED 1   /* a job failed or was cancelled, or a wait timed out */
#define EXIT_USAGE 2        /* a usage error, or a request the daemon rejected as malformed */
#define EXIT_UNREACHABLE 69 /* EX_UNAVAILABLE: the daemon does not answer */
#define EXIT_SOFTWARE 70    /* EX_SOFTWARE: an internal error (futurectl misused libfutured) */
#define EXIT_OSERR 71       /* EX_OSERR: out of memory */

typedef struct Ctl {
        const char *endpoint; /* borrowed from argv or the environment; NULL: the default */
        const char *server_key; /* CURVE, for tcp://: --server-key, else $FUTURED_SERVER_KEY */
        const char *client_key; /* ... --client-key, else $FUTURED_CLIENT_KEY */
        bool json;
        bool stop;  /* --help or --version was printed: parsing ends, nothing runs */
        futured *c; /* owned; NULL until ctl_connect() */
} Ctl;

typedef struct CtlCommand CtlCommand;
struct CtlCommand {
        const char *name;
        size_t args_size; /* the command's arguments struct, zeroed before parse() */
        /* Fills `args` from argv (borrowed: `args` may point into it). Returns 0, or an exit
         * status after printing why; 0 with ctl->stop set after --help. */
        int (*parse)(Ctl *ctl, const CtlCommand *cmd, int argc, char **argv, void *args);
        /* Does the work; returns the exit status. */
        int (*run)(Ctl *ctl, const CtlCommand *cmd, void *args);
        void (*clear)(void *args); /* frees what parse() and run() left in `args`; may be NULL */
        const void *data;          /* the command's own table row, if any */
};

/* A parsed command line. */
typedef struct CtlInvocation {
        Ctl ctl;
        const CtlCommand *cmd; /* NULL when parsing stopped before the command */
        void *args;            /* owned, cmd->args_size bytes */
} CtlInvocation;

/* Parses the whole command line (argv[0] is the program) into `inv`, which the caller clears with
 * ctl_invocation_clear() whatever the outcome. Returns 0 when there is something to run (or
 * --help/--version printed), or an exit status after printing why. */
int ctl_parse(CtlInvocation *inv, int argc, char **argv);

/* Runs a parsed command line; returns the exit status. */
int ctl_run(CtlInvocation *inv);

/* Frees what `inv` holds (the connection included). */
void ctl_invocation_clear(CtlInvocation *inv);

/* Connects ctl->c if not yet connected. Returns 0, or an exit status after printing why. */
int ctl_connect(Ctl *ctl);

/* Prints a one-line message for the negative errno `r` (from libfutured or a helper) of `what`
 * and returns the exit status that goes with it: 2 for a request the daemon rejected as
 * malformed, 69 for an unreachable daemon, 71 for -ENOMEM, 70 for an -EINVAL that libfutured
 * gave no reason for (a bug here), 1 otherwise. */
int ctl_error(Ctl *ctl, int r, const char *what);

/* Prints "futurectl CMD: message" and the command's usage line; returns EXIT_USAGE. */
int ctl_usage_error(const char *usage, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reports the option getopt_long() just refused; returns EXIT_USAGE. */
int ctl_bad_option(const char *usage, char **argv);

/* Parses a number of seconds (>= 0) or an ID (> 0). Return 0 or -EINVAL. */
int ctl_parse_seconds(const char *s, double *ret);
int ctl_parse_id(const char *s, futured_id *ret);

/* Makes SIGINT and SIGTERM set a flag instead of killing the process (without SA_RESTART, so a
 * blocking libfutured call returns -EINTR), for commands that report before they exit. */
void ctl_catch_interrupts(void);
/* True once SIGINT or SIGTERM arrived after ctl_catch_interrupts(). */
bool ctl_interrupted(void);

/* A -h/--help or --json/-c seen among the options common to every command. Handles them for
 * getopt loops: returns true if `c` was one of them (-h prints `help` and sets ctl->stop). */
bool ctl_common_option(Ctl *ctl, int c, const char *help);

/* getopt_long() that handles the common options itself (-h/--help, --json, -c/--connect) and
 * returns the next other option code, or -1 at the end or after --help (ctl->stop). */
struct option;
int ctl_next_option(Ctl *ctl, int argc, char **argv, const char *shortopts,
                    const struct option *options, const char *help);

/* The long options every command accepts; getopt codes for them. */
#define CTL_COMMON_OPTIONS                                          \
        { "help", no_argument, NULL, 'h' }, { "json", no_argument, NULL, 'J' }, \
                { "connect", required_argument, NULL, 'C' },              \
                { "server-key", required_argument, NULL, 'S' },           \
                { "client-key", required_argument, NULL, 'K' }

extern const CtlCommand primes_command;
extern const CtlCommand flags_command;
