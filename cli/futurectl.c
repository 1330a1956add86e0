/* futurectl: the command-line client of futured. Global options, the command table, and the
 * commands that map one-to-one onto protocol operations; `primes` and `flags` have files of
 * their own. */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <msgpack.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "config.h"
#include "futurectl.h"
#include "json.h"
#include "keyfile.h"
#include "macro.h"
#include "now.h"
#include "proto.h"

static const char main_usage[] =
        "Usage: futurectl [--connect ENDPOINT] [--json] COMMAND [ARG...]\n"
        "\n"
        "The client of futured, concurrent.futures as a system service.\n"
        "\n"
        "Commands:\n"
        "  submit KIND [ARG...]      submit a job; print its ID (--wait: its result)\n"
        "  status ID...              print the state of futures (never blocks)\n"
        "  wait ID...                wait for futures (--all, --any, --first-error)\n"
        "  result ID                 wait for a future and print its result\n"
        "  cancel ID...              cancel futures; running work is stopped\n"
        "  release ID...             drop retained results\n"
        "  list                      list futures (--state S, --after ID, --limit N)\n"
        "  stats                     print the daemon's counters\n"
        "  watch [TOPIC...]          print events as they happen\n"
        "  map KIND ARGS...          one job per ARGS, results in input order\n"
        "  primes [N...]             the classic prime checker, through the daemon\n"
        "  flags [CC...]             the classic flag downloader, through the daemon\n"
        "  keygen [--out PREFIX]     make a CURVE key pair: PREFIX.key and PREFIX.pub, or\n"
        "                            print it\n"
        "\n"
        "Options:\n"
        "  -c, --connect ENDPOINT    the daemon's endpoint (default $FUTURED_ENDPOINT, else\n"
        "                            ipc://$XDG_RUNTIME_DIR/futured/futured.sock, or\n"
        "                            ipc:///run/futured/futured.sock as root)\n"
        "      --server-key KEY|FILE the daemon's CURVE public key, for tcp:// (default\n"
        "                            $FUTURED_SERVER_KEY)\n"
        "      --client-key FILE     this client's CURVE key pair, written by keygen\n"
        "                            (default $FUTURED_CLIENT_KEY)\n"
        "      --json                machine-readable output\n"
        "  -h, --help                this help; COMMAND --help for a command's\n"
        "      --version             the version\n"
        "\n"
        "Job arguments are NAME=VALUE or bare values in the kind's parameter order, e.g.\n"
        "  futurectl submit prime 18446744073709551557 method=miller-rabin --wait\n"
        "\n"
        "Exit status: 0 success, 1 a job failed (or was cancelled, or a wait timed out),\n"
        "2 usage error or request rejected, 69 daemon unreachable, 70 internal error,\n"
        "71 out of memory.\n";

/* The signals that interrupt a command, the one place that lists them; the handler blocks all of
 * them while it runs. */
static const int interrupt_signals[] = { SIGINT, SIGTERM };
static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig) {
        interrupted = 1;
}

void ctl_catch_interrupts(void) {
        struct sigaction sa = { .sa_handler = on_interrupt };

        sigemptyset(&sa.sa_mask);
        for (size_t i = 0; i < ELEMENTSOF(interrupt_signals); i++)
                sigaddset(&sa.sa_mask, interrupt_signals[i]);
        for (size_t i = 0; i < ELEMENTSOF(interrupt_signals); i++)
                sigaction(interrupt_signals[i], &sa, NULL);
}

bool ctl_interrupted(void) {
        return interrupted;
}

/* Whether CURVE keys were given. */
static bool ctl_curve(const Ctl *ctl) {
        return ctl->server_key || getenv("FUTURED_SERVER_KEY");
}

int ctl_connect(Ctl *ctl) {
        int r;

        if (ctl->c)
                return 0;
        r = futured_connect_curve(&ctl->c, ctl->endpoint, 5.0,
                                  ctl->server_key ?: getenv("FUTURED_SERVER_KEY"),
                                  ctl->client_key ?: getenv("FUTURED_CLIENT_KEY"));
        if (r == -EPERM || r == -ENOKEY || r == -EBADMSG || r == -ENOENT || r == -EINVAL) {
                fprintf(stderr, "futurectl: cannot use the CURVE keys: %s\n",
                        r == -EINVAL    ? "--server-key and --client-key go together"
                        : r == -EPERM   ? "the client key file is readable by others (chmod 600)"
                        : r == -ENOKEY  ? "a key file lacks its 'public' or 'secret' line"
                        : r == -EBADMSG ? "a key file has a line that is not 'public|secret KEY'"
                                        : strerror(-r));
                return EXIT_USAGE;
        }
        if (r == -EACCES) {
                _cleanup_free_ char *def = ctl->endpoint ? NULL : futured_endpoint_default();
                const char *e = ctl->endpoint ?: def ?: "";
                fprintf(stderr, "futurectl: permission denied on %s (are you in group futured?)\n",
                        strncmp(e, "ipc://", 6) == 0 ? e + 6 : e);
                return EXIT_UNREACHABLE;
        }
        if (r < 0) {
                _cleanup_free_ char *def = ctl->endpoint ? NULL : futured_endpoint_default();
                fprintf(stderr, "futurectl: cannot reach futured at %s: %s\n",
                        ctl->endpoint ?: def ?: "(default)",
                        r != -EHOSTUNREACH ? strerror(-r)
                        : ctl_curve(ctl)   ? "no answer (is futured running, and is this "
                                             "client's public key on its allow list?)"
                                           : "no daemon answers (is futured running?)");
                return EXIT_UNREACHABLE;
        }
        return 0;
}

int ctl_error(Ctl *ctl, int r, const char *what) {
        static const char *const usage_codes[] = { "bad_", "unknown_", "too_many", "too_large",
                                                   NULL };
        const char *code = ctl->c ? futured_error_code(ctl->c) : "";

        if (r == -EHOSTUNREACH) {
                fprintf(stderr, "futurectl: %s: futured stopped answering\n", what);
                return EXIT_UNREACHABLE;
        }
        if (r == -EPROTO || (r == -EINVAL && ctl->c && *futured_error_message(ctl->c))) {
                fprintf(stderr, "futurectl: %s: %s (%s)\n", what, futured_error_message(ctl->c),
                        code);
                if (strcmp(code, "quota_exceeded") == 0)
                        fprintf(stderr, "futurectl: your jobs and results (all of this user's, or "
                                        "of this CURVE key) are at a quota of futured: release "
                                        "results or let jobs finish, then submit again\n");
                for (size_t i = 0; usage_codes[i]; i++)
                        if (strncmp(code, usage_codes[i], strlen(usage_codes[i])) == 0)
                                return EXIT_USAGE;
                return EXIT_JOB_FAILED;
        }
        fprintf(stderr, "futurectl: %s: %s\n", what, strerror(-r));
        if (r == -ENOMEM)
                return EXIT_OSERR;
        if (r == -EINVAL)
                return EXIT_SOFTWARE;
        return EXIT_JOB_FAILED;
}

int ctl_usage_error(const char *usage, const char *fmt, ...) {
        va_list ap;

        fputs("futurectl: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, "\n%.*s", (int) strcspn(usage, "\n") + 1, usage);
        return EXIT_USAGE;
}

int ctl_bad_option(const char *usage, char **argv) {
        /* getopt_long() leaves the culprit at argv[optind - 1]; optopt names a short option. */
        if (optind > 0 && strncmp(argv[optind - 1], "--", 2) == 0)
                return ctl_usage_error(usage, "unknown option, or one missing its value: '%s'",
                                       argv[optind - 1]);
        if (optopt > 0 && optopt < 128)
                return ctl_usage_error(usage, "unknown option, or one missing its value: '-%c'",
                                       optopt);
        return ctl_usage_error(usage, "unknown option, or one missing its value: '%s'",
                               optind > 0 ? argv[optind - 1] : "?");
}

int ctl_parse_seconds(const char *s, double *ret) {
        char *end;
        double v;

        errno = 0;
        v = strtod(s, &end);
        if (!*s || *end || errno || !isfinite(v) || v < 0)
                return -EINVAL;
        *ret = v;
        return 0;
}

int ctl_parse_id(const char *s, futured_id *ret) {
        unsigned long long v;
        char *end;

        errno = 0;
        if (*s < '0' || *s > '9')
                return -EINVAL;
        v = strtoull(s, &end, 10);
        if (*end || errno || v == 0)
                return -EINVAL;
        *ret = v;
        return 0;
}

bool ctl_common_option(Ctl *ctl, int c, const char *help) {
        switch (c) {
        case 'h':
                fputs(help, stdout);
                exit(EXIT_SUCCESS);
        case 'J':
                ctl->json = true;
                return true;
        case 'C':
                ctl->endpoint = optarg;
                return true;
        case 'S':
                ctl->server_key = optarg;
                return true;
        case 'K':
                ctl->client_key = optarg;
                return true;
        }
        return false;
}

int ctl_next_option(Ctl *ctl, int argc, char **argv, const char *shortopts,
                    const struct option *options, const char *help) {
        int c;

        while ((c = getopt_long(argc, argv, shortopts, options, NULL)) >= 0) {
                if (c == 'c')
                        c = 'C';
                if (!ctl_common_option(ctl, c, help))
                        break;
        }
        return c;
}

/* The options of a command that has only the common ones. */
static const struct option common_options[] = { CTL_COMMON_OPTIONS, {} };

/* Runs getopt_long with only the common options; returns 0 or an exit status. */
static int parse_common_only(Ctl *ctl, int argc, char **argv, const char *help) {
        int c;

        c = ctl_next_option(ctl, argc, argv, "hc:", common_options, help);
        return c >= 0 ? ctl_bad_option(help, argv) : 0;
}

/* Prints an outcome: the result map (or the failure) as JSON or as text. Returns the exit status
 * it stands for. */
static int print_outcome(Ctl *ctl, futured_id id, const futured_outcome *o) {
        if (ctl->json) {
                printf("{\"id\":%llu,\"state\":\"%s\"", (unsigned long long) id,
                       futured_state_name(o->state));
                if (o->state == FUTURED_DONE) {
                        fputs(",\"result\":", stdout);
                        json_print_packed(stdout, o->result, o->result_len);
                } else if (o->state == FUTURED_FAILED) {
                        fputs(",\"failure\":{\"code\":", stdout);
                        json_print_string(stdout, o->failure_code, strlen(o->failure_code));
                        fputs(",\"message\":", stdout);
                        json_print_string(stdout, o->failure_message, strlen(o->failure_message));
                        if (o->signal)
                                printf(",\"signal\":%d", o->signal);
                        if (o->http_status)
                                printf(",\"http_status\":%d", o->http_status);
                        fputc('}', stdout);
                }
                puts("}");
        } else if (o->state == FUTURED_DONE) {
                json_print_packed(stdout, o->result, o->result_len);
                putchar('\n');
        } else if (o->state == FUTURED_FAILED)
                printf("failed: %s: %s\n", o->failure_code, o->failure_message);
        else
                printf("%s\n", futured_state_name(o->state));
        return o->state == FUTURED_DONE ? EXIT_SUCCESS : EXIT_JOB_FAILED;
}

static int cmd_submit(Ctl *ctl, int argc, char **argv) {
        static const char help[] =
                "Usage: futurectl submit KIND [ARG...] [--wait] [--priority N] [--timeout S]\n"
                "                        [--group NAME [--group-limit N]] [--retries N]\n"
                "                        [--key KEY]\n"
                "\n"
                "Submits one job and prints its future ID, or with --wait its result.\n"
                "ARG is NAME=VALUE or a bare value in the kind's parameter order.\n"
                "  --wait            wait for the job and print its result\n"
                "  --priority N      -1000..1000, higher runs first (default 0)\n"
                "  --timeout S       seconds the job may run before it is stopped\n"
                "  --group NAME      a group of jobs limited together\n"
                "  --group-limit N   at most N jobs of the group run at once\n"
                "  --retries N       reruns after the job's worker process died\n"
                "  --key KEY         an idempotency key: while a future submitted with KEY is\n"
                "                    kept, submitting again prints its ID and queues nothing\n";
        static const struct option options[] = {
                CTL_COMMON_OPTIONS,
                { "wait", no_argument, NULL, 'w' },
                { "priority", required_argument, NULL, 'p' },
                { "timeout", required_argument, NULL, 't' },
                { "group", required_argument, NULL, 'g' },
                { "group-limit", required_argument, NULL, 'G' },
                { "retries", required_argument, NULL, 'r' },
                { "key", required_argument, NULL, 'k' },
                {},
        };
        futured_job job = {};
        _cleanup_free_ void *args = NULL;
        futured_outcome out;
        futured_id id;
        bool wait = false;
        char *end;
        int c, r;

        while ((c = ctl_next_option(ctl, argc, argv, "hc:", options, help)) >= 0) {
                errno = 0;
                switch (c) {
                case 'w':
                        wait = true;
                        break;
                case 'p':
                        job.priority = (int) strtol(optarg, &end, 10);
                        if (*end || !*optarg || errno || abs(job.priority) > 1000)
                                return ctl_usage_error(help, "--priority takes -1000..1000");
                        break;
                case 't':
                        if (ctl_parse_seconds(optarg, &job.timeout) < 0)
                                return ctl_usage_error(help, "--timeout takes seconds");
                        break;
                case 'k':
                        job.idempotency_key = optarg;
                        break;
                case 'g':
                        job.group = optarg;
                        break;
                case 'G':
                case 'r': {
                        unsigned long v = strtoul(optarg, &end, 10);
                        if (*end || !*optarg || errno || *optarg == '-' || v > 1000000)
                                return ctl_usage_error(help, "%s takes a count",
                                                       c == 'G' ? "--group-limit" : "--retries");
                        *(c == 'G' ? &job.group_limit : &job.retries) = (unsigned) v;
                        break;
                }
                default:
                        return ctl_bad_option(help, argv);
                }
        }
        if (optind >= argc)
                return ctl_usage_error(help, "no job kind given");
        job.kind = argv[optind];
        r = ctl_connect(ctl);
        if (r)
                return r;
        r = futured_args_pack(ctl->c, job.kind, argv + optind + 1, (size_t) (argc - optind - 1),
                              &args, &job.args_len);
        if (r < 0)
                return ctl_usage_error(help, "%s", futured_error_message(ctl->c));
        job.args = args;
        r = futured_submit(ctl->c, &job, 1, &id);
        if (r < 0)
                return ctl_error(ctl, r, "submit");
        if (!wait) {
                if (ctl->json)
                        printf("{\"id\":%llu}\n", (unsigned long long) id);
                else
                        printf("%llu\n", (unsigned long long) id);
                return EXIT_SUCCESS;
        }
        r = futured_result(ctl->c, id, -1, &out);
        if (r < 0)
                return ctl_error(ctl, r, "result");
        r = print_outcome(ctl, id, &out);
        futured_outcome_clear(&out);
        return r;
}

static int cmd_result(Ctl *ctl, int argc, char **argv) {
        static const char help[] =
                "Usage: futurectl result ID [--timeout S]\n"
                "\n"
                "Waits for the future and prints its result (exit 0), or its failure or final\n"
                "state (exit 1). With --timeout, exits 1 if it has not finished by then.\n";
        static const struct option options[] = {
                CTL_COMMON_OPTIONS,
                { "timeout", required_argument, NULL, 't' },
                {},
        };
        futured_outcome out;
        futured_id id;
        double timeout = -1;
        int c, r;

        while ((c = ctl_next_option(ctl, argc, argv, "hc:", options, help)) >= 0) {
                if (c != 't')
                        return ctl_bad_option(help, argv);
                if (ctl_parse_seconds(optarg, &timeout) < 0)
                        return ctl_usage_error(help, "--timeout takes seconds");
        }
        if (optind != argc - 1)
                return ctl_usage_error(help, "give exactly one future ID");
        if (ctl_parse_id(argv[optind], &id) < 0)
                return ctl_usage_error(help, "'%s' is not a future ID", argv[optind]);
        r = ctl_connect(ctl);
        if (r)
                return r;
        r = futured_result(ctl->c, id, timeout, &out);
        if (r == -ETIMEDOUT) {
                fprintf(stderr, "futurectl: result: future %llu has not finished\n",
                        (unsigned long long) id);
                return EXIT_JOB_FAILED;
        }
        if (r < 0)
                return ctl_error(ctl, r, "result");
        r = print_outcome(ctl, id, &out);
        futured_outcome_clear(&out);
        return r;
}

/* The commands on a list of future IDs (status, wait, cancel, release) are one skeleton driven by
 * a table: a row says which options its command takes beyond the common ones, which libfutured
 * call it makes and how it prints the answers; run_ids_command() parses, connects, calls and
 * prints the same way for all of them. */

typedef struct IdsCommand IdsCommand;

/* One run of an ID command: its options, its IDs and the answers of its call. */
typedef struct IdsRequest {
        const IdsCommand *cmd;
        futured_wait_mode mode; /* wait: --all, --any or --first-error */
        double timeout;         /* wait: --timeout, or < 0 for none */
        futured_id *ids;        /* owned */
        size_t n;
        void *answers; /* owned: n answers of cmd->answer_size bytes each, filled by cmd->call */
        int count;     /* what cmd->call returned */
} IdsRequest;

struct IdsCommand {
        const char *name;
        const char *help;
        /* CTL_COMMON_OPTIONS and the command's own; option() handles one of its own and returns
         * 0, or an exit status after printing why (NULL: it has none). */
        const struct option *options;
        int (*option)(IdsRequest *q, int c);
        size_t answer_size;
        /* The libfutured call: returns >= 0 (kept in q->count) or a negative errno. */
        int (*call)(futured *c, IdsRequest *q);
        /* Prints the answers; returns the exit status. */
        int (*print)(const Ctl *ctl, const IdsRequest *q);
        const char *verb; /* cancel, release: what a future the call changed became */
};

static void ids_request_clear(IdsRequest *q) {
        free(q->ids);
        free(q->answers);
}

/* Parses argv[optind..argc) as future IDs into q->ids. Returns 0, or an exit status after
 * printing why. */
static int parse_ids(Ctl *ctl, int argc, char **argv, IdsRequest *q) {
        if (optind >= argc)
                return ctl_usage_error(q->cmd->help, "no future IDs given");
        q->n = (size_t) (argc - optind);
        q->ids = calloc(q->n, sizeof *q->ids);
        if (!q->ids)
                return ctl_error(ctl, -ENOMEM, q->cmd->name);
        for (int i = optind; i < argc; i++)
                if (ctl_parse_id(argv[i], &q->ids[i - optind]) < 0)
                        return ctl_usage_error(q->cmd->help, "'%s' is not a future ID", argv[i]);
        return 0;
}

static int wait_option(IdsRequest *q, int c) {
        switch (c) {
        case 'a':
                q->mode = FUTURED_ALL_COMPLETED;
                return 0;
        case 'y':
                q->mode = FUTURED_FIRST_COMPLETED;
                return 0;
        case 'e':
                q->mode = FUTURED_FIRST_EXCEPTION;
                return 0;
        }
        assert(c == 't');
        if (ctl_parse_seconds(optarg, &q->timeout) < 0)
                return ctl_usage_error(q->cmd->help, "--timeout takes seconds");
        return 0;
}

static int call_status(futured *c, IdsRequest *q) {
        return futured_status(c, q->ids, q->n, q->answers);
}

static int call_wait(futured *c, IdsRequest *q) {
        return futured_wait(c, q->ids, q->n, q->mode, q->timeout, q->answers);
}

static int call_cancel(futured *c, IdsRequest *q) {
        return futured_cancel(c, q->ids, q->n, q->answers);
}

static int call_release(futured *c, IdsRequest *q) {
        return futured_release(c, q->ids, q->n, q->answers);
}

/* Prints one line "ID WORD" per future, or with --json one object {"ID":VALUE,...}; value()
 * prints the WORD or the VALUE of the i-th. */
static void print_id_map(const Ctl *ctl, const IdsRequest *q,
                         void (*value)(const IdsRequest *q, size_t i, bool json)) {
        if (ctl->json)
                putchar('{');
        for (size_t i = 0; i < q->n; i++) {
                if (ctl->json)
                        printf("%s\"%llu\":", i ? "," : "", (unsigned long long) q->ids[i]);
                else
                        printf("%llu ", (unsigned long long) q->ids[i]);
                value(q, i, ctl->json);
                if (!ctl->json)
                        putchar('\n');
        }
        if (ctl->json)
                puts("}");
}

static void print_state(const IdsRequest *q, size_t i, bool json) {
        const char *name = futured_state_name(((const futured_state *) q->answers)[i]);

        printf(json ? "\"%s\"" : "%s", name);
}

/* status: the state of each future. */
static int print_states(const Ctl *ctl, const IdsRequest *q) {
        print_id_map(ctl, q, print_state);
        return EXIT_SUCCESS;
}

static void print_verdict(const IdsRequest *q, size_t i, bool json) {
        bool changed = ((const bool *) q->answers)[i];

        if (json)
                fputs(changed ? "true" : "false", stdout);
        else
                fputs(changed ? q->cmd->verb : "unchanged", stdout);
}

/* cancel and release: whether the call changed each future. */
static int print_verdicts(const Ctl *ctl, const IdsRequest *q) {
        print_id_map(ctl, q, print_verdict);
        return EXIT_SUCCESS;
}

/* Prints the IDs whose done flag is `want`, as a JSON array. */
static void print_id_list(const IdsRequest *q, bool want) {
        const bool *done = q->answers;
        bool first = true;

        putchar('[');
        for (size_t i = 0; i < q->n; i++)
                if (done[i] == want) {
                        printf("%s%llu", first ? "" : ",", (unsigned long long) q->ids[i]);
                        first = false;
                }
        putchar(']');
}

/* wait: the done and the not-done IDs. Exit 1 when the wait ended before its mode held: a
 * timeout, or --any/--first-error with nothing done. */
static int print_done(const Ctl *ctl, const IdsRequest *q) {
        fputs(ctl->json ? "{\"done\":" : "done: ", stdout);
        print_id_list(q, true);
        fputs(ctl->json ? ",\"not_done\":" : "\nnot done: ", stdout);
        print_id_list(q, false);
        puts(ctl->json ? "}" : "");
        if (q->mode == FUTURED_ALL_COMPLETED && (size_t) q->count < q->n)
                return EXIT_JOB_FAILED;
        return q->count > 0 ? EXIT_SUCCESS : EXIT_JOB_FAILED;
}

static const struct option wait_options[] = {
        CTL_COMMON_OPTIONS,
        { "all", no_argument, NULL, 'a' },
        { "any", no_argument, NULL, 'y' },
        { "first-error", no_argument, NULL, 'e' },
        { "timeout", required_argument, NULL, 't' },
        {},
};

static const char status_help[] = "Usage: futurectl status ID...\n\n"
                                  "Prints the state of each future, without waiting.\n";

static const char wait_help[] =
        "Usage: futurectl wait ID... [--all | --any | --first-error] [--timeout S]\n"
        "\n"
        "Waits until all the futures are done (--all, the default), any one is (--any),\n"
        "or one fails (--first-error), as concurrent.futures.wait. Prints the done and\n"
        "not-done IDs. Exits 1 if the timeout passed first.\n";

static const char cancel_help[] =
        "Usage: futurectl cancel ID...\n\n"
        "Cancels futures: pending ones never run; running ones are stopped (the worker\n"
        "process is killed, the transfer aborted). Finished ones are unchanged.\n";

static const char release_help[] = "Usage: futurectl release ID...\n\n"
                                   "Drops the retained results of finished futures.\n";

static const IdsCommand ids_commands[] = {
        {
                .name = "status",
                .help = status_help,
                .options = common_options,
                .answer_size = sizeof(futured_state),
                .call = call_status,
                .print = print_states,
        },
        {
                .name = "wait",
                .help = wait_help,
                .options = wait_options,
                .option = wait_option,
                .answer_size = sizeof(bool),
                .call = call_wait,
                .print = print_done,
        },
        {
                .name = "cancel",
                .help = cancel_help,
                .options = common_options,
                .answer_size = sizeof(bool),
                .call = call_cancel,
                .print = print_verdicts,
                .verb = "cancelled",
        },
        {
                .name = "release",
                .help = release_help,
                .options = common_options,
                .answer_size = sizeof(bool),
                .call = call_release,
                .print = print_verdicts,
                .verb = "released",
        },
};

/* The skeleton of every ID command: options, IDs, connect, call, print. */
static int run_ids_command(Ctl *ctl, const IdsCommand *cmd, int argc, char **argv) {
        _cleanup_(ids_request_clear) IdsRequest q = {
                .cmd = cmd,
                .mode = FUTURED_ALL_COMPLETED,
                .timeout = -1,
        };
        int c, r;

        while ((c = ctl_next_option(ctl, argc, argv, "hc:", cmd->options, cmd->help)) >= 0) {
                r = c == '?' || !cmd->option ? ctl_bad_option(cmd->help, argv) : cmd->option(&q, c);
                if (r)
                        return r;
        }
        r = parse_ids(ctl, argc, argv, &q);
        if (r)
                return r;
        q.answers = calloc(q.n, cmd->answer_size);
        if (!q.answers)
                return ctl_error(ctl, -ENOMEM, cmd->name);
        r = ctl_connect(ctl);
        if (r)
                return r;
        r = cmd->call(ctl->c, &q);
        if (r < 0)
                return ctl_error(ctl, r, cmd->name);
        q.count = r;
        return cmd->print(ctl, &q);
}
/* Sends `op` with `fields` and prints the reply's `key` as JSON. */
static int print_call(Ctl *ctl, const char *op, const msgpack_sbuffer *fields, const char *key) {
        _cleanup_free_ void *reply = NULL;
        msgpack_unpacked u;
        size_t len;
        int r;

        r = ctl_connect(ctl);
        if (r)
                return r;
        r = futured_call(ctl->c, op, fields ? fields->data : NULL, fields ? fields->size : 0,
                         &reply, &len);
        if (r < 0)
                return ctl_error(ctl, r, op);
        msgpack_unpacked_init(&u);
        if (msgpack_unpack_next(&u, reply, len, NULL) == MSGPACK_UNPACK_SUCCESS) {
                const msgpack_object *o = proto_map_get(&u.data, key);
                if (ctl->json || !o || o->type != MSGPACK_OBJECT_MAP)
                        json_print(stdout, o ? o : &u.data);
                else
                        for (uint32_t i = 0; i < o->via.map.size; i++) {
                                const msgpack_object *k = &o->via.map.ptr[i].key;
                                if (k->type == MSGPACK_OBJECT_STR)
                                        printf("%-18.*s ", (int) k->via.str.size, k->via.str.ptr);
                                else
                                        json_print(stdout, k);
                                json_print(stdout, &o->via.map.ptr[i].val);
                                putchar('\n');
                        }
                if (ctl->json || !o || o->type != MSGPACK_OBJECT_MAP)
                        putchar('\n');
        }
        msgpack_unpacked_destroy(&u);
        return EXIT_SUCCESS;
}

static int cmd_stats(Ctl *ctl, int argc, char **argv) {
        static const char help[] = "Usage: futurectl stats\n\nPrints the daemon's counters.\n";
        int r = parse_common_only(ctl, argc, argv, help);

        if (r)
                return r;
        if (optind != argc)
                return ctl_usage_error(help, "stats takes no arguments");
        return print_call(ctl, "stats", NULL, "stats");
}

static int cmd_list(Ctl *ctl, int argc, char **argv) {
        static const char help[] =
                "Usage: futurectl list [--state STATE] [--after ID] [--limit N]\n"
                "\n"
                "Lists futures in ID order: ID, kind, state, group. STATE is pending, running,\n"
                "done, failed or cancelled. Continue a long list with --after the last ID.\n";
        static const struct option options[] = {
                CTL_COMMON_OPTIONS,
                { "state", required_argument, NULL, 's' },
                { "after", required_argument, NULL, 'a' },
                { "limit", required_argument, NULL, 'l' },
                {},
        };
        msgpack_sbuffer sb;
        msgpack_packer pk;
        const char *state = NULL;
        futured_id after = 0, limit = 100;
        _cleanup_free_ void *reply = NULL;
        msgpack_unpacked u;
        size_t len;
        int c, r;

        while ((c = ctl_next_option(ctl, argc, argv, "hc:", options, help)) >= 0) {
                if (c == 's')
                        state = optarg;
                else if (c == 'a' && ctl_parse_id(optarg, &after) == 0)
                        continue;
                else if (c == 'l' && ctl_parse_id(optarg, &limit) == 0 && limit <= 10000)
                        continue;
                else if (c == 'a' || c == 'l')
                        return ctl_usage_error(help, "--%s takes a number", c == 'a' ? "after" : "limit");
                else
                        return ctl_bad_option(help, argv);
        }
        if (optind != argc)
                return ctl_usage_error(help, "list takes no arguments");
        r = ctl_connect(ctl);
        if (r)
                return r;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 2 + !!state);
        proto_pack_str(&pk, "after");
        msgpack_pack_uint64(&pk, after);
        proto_pack_str(&pk, "limit");
        msgpack_pack_uint64(&pk, limit);
        if (state) {
                proto_pack_str(&pk, "state");
                proto_pack_str(&pk, state);
        }
        r = futured_call(ctl->c, "list", sb.data, sb.size, &reply, &len);
        msgpack_sbuffer_destroy(&sb);
        if (r < 0)
                return ctl_error(ctl, r, "list");
        msgpack_unpacked_init(&u);
        if (msgpack_unpack_next(&u, reply, len, NULL) == MSGPACK_UNPACK_SUCCESS) {
                const msgpack_object *list = proto_map_get(&u.data, "futures");
                if (ctl->json) {
                        fputs("{\"futures\":", stdout);
                        json_print(stdout, list);
                        fputs(",\"more\":", stdout);
                        json_print(stdout, proto_map_get(&u.data, "more"));
                        puts("}");
                } else
                        for (uint32_t i = 0; list && list->type == MSGPACK_OBJECT_ARRAY &&
                                             i < list->via.array.size;
                             i++) {
                                const msgpack_object *f = &list->via.array.ptr[i];
                                _cleanup_free_ char *kind = proto_strdup(proto_map_get(f, "kind"), 64);
                                _cleanup_free_ char *st = proto_strdup(proto_map_get(f, "state"), 64);
                                _cleanup_free_ char *group = proto_strdup(proto_map_get(f, "group"),
                                                                          64);
                                uint64_t id = 0;
                                (void) proto_get_uint(proto_map_get(f, "id"), &id);
                                printf("%-10llu %-10s %-10s %s\n", (unsigned long long) id,
                                       kind ?: "?", st ?: "?", group ?: "");
                        }
        }
        msgpack_unpacked_destroy(&u);
        return EXIT_SUCCESS;
}

static int cmd_watch(Ctl *ctl, int argc, char **argv) {
        static const char help[] =
                "Usage: futurectl watch [TOPIC...]\n"
                "\n"
                "Prints events as they happen, one line each: the topic and the event as JSON.\n"
                "TOPIC is a prefix such as done/ (every completion), failed/, done/GROUP or\n"
                "progress/; the default is every event. Stops at Ctrl-C.\n";
        char topic[256];
        int r;

        r = parse_common_only(ctl, argc, argv, help);
        if (r)
                return r;
        r = ctl_connect(ctl);
        if (r)
                return r;
        for (int i = optind; i < argc || (i == optind && optind == argc); i++) {
                r = futured_subscribe(ctl->c, i < argc ? argv[i] : "");
                if (r < 0)
                        return ctl_error(ctl, r, "watch");
        }
        ctl_catch_interrupts();
        setvbuf(stdout, NULL, _IOLBF, 0);
        while (!ctl_interrupted()) {
                void *body;
                size_t len;

                r = futured_event_next(ctl->c, 0.25, topic, sizeof topic, &body, &len);
                if (r == -ETIMEDOUT || r == -EINTR)
                        continue;
                if (r < 0)
                        return ctl_error(ctl, r, "watch");
                if (ctl->json) {
                        fputs("{\"topic\":", stdout);
                        json_print_string(stdout, topic, strlen(topic));
                        fputs(",\"event\":", stdout);
                        json_print_packed(stdout, body, len);
                        puts("}");
                } else {
                        printf("%s ", topic);
                        json_print_packed(stdout, body, len);
                        putchar('\n');
                }
                free(body);
        }
        return EXIT_SUCCESS;
}

/* Splits "a,b,c" in place into argv-style pointers; returns the count. */
static size_t split_commas(char *s, char **out, size_t max) {
        size_t n = 0;

        if (!*s)
                return 0;
        for (char *tok = s; tok && n < max; n++) {
                char *comma = strchr(tok, ',');
                out[n] = tok;
                if (comma)
                        *comma++ = '\0';
                tok = comma;
        }
        return n;
}

static int cmd_map(Ctl *ctl, int argc, char **argv) {
        static const char help[] =
                "Usage: futurectl map KIND ARGS... [--timeout S]\n"
                "\n"
                "Submits one job per ARGS in one batch and prints the results in input order,\n"
                "as Executor.map. ARGS holds a job's arguments separated by commas, e.g.\n"
                "  futurectl map prime 97 98 n=99,method=miller-rabin\n"
                "Stops at the first failure (exit 1) and cancels the rest, as map() raises.\n";
        static const struct option options[] = {
                CTL_COMMON_OPTIONS,
                { "timeout", required_argument, NULL, 't' },
                {},
        };
        _cleanup_free_ futured_job *jobs = NULL;
        _cleanup_free_ futured_id *ids = NULL;
        void **args = NULL;
        double timeout = 0;
        size_t n;
        int c, r, status = EXIT_SUCCESS;

        while ((c = ctl_next_option(ctl, argc, argv, "hc:", options, help)) >= 0) {
                if (c != 't')
                        return ctl_bad_option(help, argv);
                if (ctl_parse_seconds(optarg, &timeout) < 0)
                        return ctl_usage_error(help, "--timeout takes seconds");
        }
        if (argc - optind < 2)
                return ctl_usage_error(help, "give a kind and at least one job's arguments");
        n = (size_t) (argc - optind - 1);
        jobs = calloc(n, sizeof *jobs);
        ids = calloc(n, sizeof *ids);
        args = calloc(n, sizeof *args);
        if (!jobs || !ids || !args) {
                free(args);
                return ctl_error(ctl, -ENOMEM, "map");
        }
        r = ctl_connect(ctl);
        for (size_t i = 0; r == 0 && i < n; i++) {
                char *parts[64];
                size_t k = split_commas(argv[optind + 1 + i], parts, ELEMENTSOF(parts));

                jobs[i].kind = argv[optind];
                jobs[i].timeout = timeout;
                if (futured_args_pack(ctl->c, jobs[i].kind, parts, k, &args[i], &jobs[i].args_len) <
                    0)
                        r = ctl_usage_error(help, "%s", futured_error_message(ctl->c));
                jobs[i].args = args[i];
        }
        if (r == 0 && (r = futured_submit(ctl->c, jobs, n, ids)) < 0)
                r = ctl_error(ctl, r, "map");
        if (ctl->json && r == 0)
                putchar('[');
        for (size_t i = 0; r == 0 && i < n; i++) {
                futured_outcome out;

                r = futured_result(ctl->c, ids[i], -1, &out);
                if (r < 0) {
                        r = ctl_error(ctl, r, "map");
                        break;
                }
                if (ctl->json && i)
                        putchar(',');
                if (out.state == FUTURED_DONE) {
                        json_print_packed(stdout, out.result, out.result_len);
                        if (!ctl->json)
                                putchar('\n');
                } else {
                        if (ctl->json)
                                puts("]");
                        fprintf(stderr, "futurectl: map: job %zu (future %llu) %s%s%s\n", i + 1,
                                (unsigned long long) ids[i], futured_state_name(out.state),
                                out.failure_code[0] ? ": " : "", out.failure_message);
                        status = EXIT_JOB_FAILED;
                        (void) futured_cancel(ctl->c, ids + i + 1, n - i - 1, NULL);
                        futured_outcome_clear(&out);
                        break;
                }
                futured_outcome_clear(&out);
        }
        if (ctl->json && r == 0 && status == EXIT_SUCCESS)
                puts("]");
        for (size_t i = 0; i < n; i++)
                free(args[i]);
        free(args);
        return r ? r : status;
}

static const char keygen_usage[] =
        "Usage: futurectl keygen [--out PREFIX]\n"
        "Makes a CURVE key pair. With --out: PREFIX.key (both keys, mode 0600) and PREFIX.pub\n"
        "(the public key, for the daemon's allow list or a client's --server-key); without:\n"
        "prints both lines on standard output.\n";

/* keygen: a new key pair from libzmq (libsodium's random source). */
static int cmd_keygen(Ctl *ctl, int argc, char **argv) {
        static const struct option options[] = {
                CTL_COMMON_OPTIONS,
                { "out", required_argument, NULL, 'o' },
                {},
        };
        char public_key[KEYFILE_KEY_LEN + 1], secret_key[KEYFILE_KEY_LEN + 1];
        const char *out = NULL;
        int c, r;

        while ((c = ctl_next_option(ctl, argc, argv, "+ho:", options, keygen_usage)) >= 0) {
                if (c != 'o')
                        return ctl_bad_option(keygen_usage, argv);
                out = optarg;
        }
        if (optind < argc)
                return ctl_usage_error(keygen_usage, "unexpected argument '%s'", argv[optind]);
        if (zmq_curve_keypair(public_key, secret_key) < 0) {
                fprintf(stderr, "futurectl keygen: %s (libzmq without CURVE?)\n",
                        zmq_strerror(zmq_errno()));
                return EXIT_SOFTWARE;
        }
        if (!out) {
                printf("public %s\nsecret %s\n", public_key, secret_key);
                return EXIT_SUCCESS;
        }
        r = keyfile_write(out, public_key, secret_key);
        if (r < 0) {
                fprintf(stderr, "futurectl keygen: cannot write %s.key and %s.pub: %s\n", out, out,
                        strerror(-r));
                return r == -EEXIST ? EXIT_USAGE : EXIT_JOB_FAILED;
        }
        return EXIT_SUCCESS;
}

/* The other commands; the ID commands are the rows of ids_commands. */
static const struct {
        const char *name;
        int (*run)(Ctl *ctl, int argc, char **argv);
} commands[] = {
        { "submit", cmd_submit }, { "result", cmd_result }, { "list", cmd_list },
        { "stats", cmd_stats },   { "watch", cmd_watch },   { "map", cmd_map },
        { "primes", cmd_primes }, { "flags", cmd_flags },   { "keygen", cmd_keygen },
};

/* Runs the command named argv[0] on its own argv; returns its exit status. */
static int run_command(Ctl *ctl, int argc, char **argv) {
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (strcmp(argv[0], commands[i].name) == 0)
                        return commands[i].run(ctl, argc, argv);
        for (size_t i = 0; i < ELEMENTSOF(ids_commands); i++)
                if (strcmp(argv[0], ids_commands[i].name) == 0)
                        return run_ids_command(ctl, &ids_commands[i], argc, argv);
        return ctl_usage_error(main_usage, "unknown command '%s'", argv[0]);
}

/* Parses the global options before COMMAND (getopt stops at the first non-option, "+"), which
 * ctl_next_option() handles but --version; --help and --version print and exit. Returns 0 with
 * optind at COMMAND, or an exit status after printing why. */
static int parse_argv(Ctl *ctl, int argc, char **argv) {
        static const struct option options[] = {
                CTL_COMMON_OPTIONS,
                { "version", no_argument, NULL, 'V' },
                {},
        };
        int c;

        opterr = 0; /* our own messages, with the usage line */
        c = ctl_next_option(ctl, argc, argv, "+hc:", options, main_usage);
        if (c == 'V') {
                printf("futurectl %s\n", FUTURED_VERSION);
                exit(EXIT_SUCCESS);
        }
        if (c >= 0)
                return ctl_bad_option(main_usage, argv);
        if (optind >= argc)
                return ctl_usage_error(main_usage, "no command given");
        return 0;
}

int main(int argc, char **argv) {
        Ctl ctl = { .endpoint = NULL };
        int r;

        r = parse_argv(&ctl, argc, argv);
        if (r)
                return r;
        argc -= optind;
        argv += optind;
        optind = 0; /* restart getopt for the command's options */
        r = run_command(&ctl, argc, argv);
        futured_free(ctl.c);
        /* Every command returns an exit status, never a negative errno (see futurectl.h). */
        assert(r >= 0 && r <= EXIT_OSERR);
        return r;
}
