/* futurectl: the command-line client of futured. Global options, the command table, parsing and
 * running a command line, and the commands that map one-to-one onto protocol operations;
 * `primes` and `flags` have files of their own, main() is in main.c. */
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
        "Long options are given in full (no abbreviations).\n"
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

/* The option just refused was an abbreviation, and check_full_name() said so. */
static bool abbreviated;

int ctl_bad_option(const char *usage, char **argv) {
        if (abbreviated) {
                abbreviated = false;
                return EXIT_USAGE;
        }
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
                ctl->stop = true;
                return true;
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

/* getopt_long() takes an unambiguous abbreviation of a long option (`--server` for
 * `--server-key`), which misleads when the word names something else: only full names are
 * taken. Returns 0, or the usage error's exit status when the option getopt_long() just took
 * (options[index]) was abbreviated. */
static int check_full_name(char **argv, const struct option *options, int index,
                           const char *help) {
        /* The option's own word: before its value when that was the next word. */
        const char *word = argv[optind - (optarg && optind >= 2 && optarg == argv[optind - 1]
                                                  ? 2 : 1)];
        size_t len;

        if (strncmp(word, "--", 2) != 0)
                return 0;
        word += 2;
        len = strcspn(word, "=");
        if (len == strlen(options[index].name) && strncmp(word, options[index].name, len) == 0)
                return 0;
        return ctl_usage_error(help, "unknown option '--%.*s' (options are not abbreviated: "
                               "did you mean '--%s'?)", (int) len, word, options[index].name);
}

int ctl_next_option(Ctl *ctl, int argc, char **argv, const char *shortopts,
                    const struct option *options, const char *help) {
        int c, index = -1;

        while ((c = getopt_long(argc, argv, shortopts, options, &index)) >= 0) {
                if (index >= 0 && check_full_name(argv, options, index, help) != 0) {
                        abbreviated = true; /* ctl_bad_option() says nothing more */
                        return '?';
                }
                index = -1;
                if (c == 'c')
                        c = 'C';
                if (!ctl_common_option(ctl, c, help))
                        break;
                if (ctl->stop)
                        return -1;
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

typedef struct SubmitArgs {
        futured_job job; /* without args: they are packed at run time, by the kind's parameters */
        bool wait;
        char **args;     /* borrowed from argv: the job's ARGs */
        size_t n_args;
} SubmitArgs;

static const char submit_help[] =
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

static int parse_submit(Ctl *ctl, const CtlCommand *cmd, int argc, char **argv, void *args) {
        const char *help = submit_help;
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
        SubmitArgs *a = args;
        futured_job *job = &a->job;
        char *end;
        int c;

        while ((c = ctl_next_option(ctl, argc, argv, "hc:", options, help)) >= 0) {
                errno = 0;
                switch (c) {
                case 'w':
                        a->wait = true;
                        break;
                case 'p': {
                        /* Checked as a long: 4294967297 must not wrap to 1 in an int. */
                        long v = strtol(optarg, &end, 10);
                        if (*end || !*optarg || errno || v < -1000 || v > 1000)
                                return ctl_usage_error(help, "--priority takes -1000..1000");
                        job->priority = (int) v;
                        break;
                }
                case 't':
                        if (ctl_parse_seconds(optarg, &job->timeout) < 0)
                                return ctl_usage_error(help, "--timeout takes seconds");
                        break;
                case 'k':
                        job->idempotency_key = optarg;
                        break;
                case 'g':
                        job->group = optarg;
                        break;
                case 'G':
                case 'r': {
                        unsigned long v = strtoul(optarg, &end, 10);
                        if (*end || !*optarg || errno || *optarg == '-' || v > 1000000)
                                return ctl_usage_error(help, "%s takes a count",
                                                       c == 'G' ? "--group-limit" : "--retries");
                        *(c == 'G' ? &job->group_limit : &job->retries) = (unsigned) v;
                        break;
                }
                default:
                        return ctl_bad_option(help, argv);
                }
        }
        if (ctl->stop)
                return 0;
        if (optind >= argc)
                return ctl_usage_error(help, "no job kind given");
        job->kind = argv[optind];
        a->args = argv + optind + 1;
        a->n_args = (size_t) (argc - optind - 1);
        return 0;
}

static int run_submit(Ctl *ctl, const CtlCommand *cmd, void *args) {
        SubmitArgs *a = args;
        _cleanup_free_ void *packed = NULL;
        futured_outcome out;
        futured_id id;
        int r;

        r = ctl_connect(ctl);
        if (r)
                return r;
        r = futured_args_pack(ctl->c, a->job.kind, a->args, a->n_args, &packed, &a->job.args_len);
        if (r < 0)
                return ctl_usage_error(cmd->data, "%s", futured_error_message(ctl->c));
        a->job.args = packed;
        r = futured_submit(ctl->c, &a->job, 1, &id);
        if (r < 0)
                return ctl_error(ctl, r, "submit");
        if (!a->wait) {
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

typedef struct ResultArgs {
        futured_id id;
        double timeout; /* < 0: none */
} ResultArgs;

static int parse_result(Ctl *ctl, const CtlCommand *cmd, int argc, char **argv, void *args) {
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
        ResultArgs *a = args;
        int c;

        a->timeout = -1;
        while ((c = ctl_next_option(ctl, argc, argv, "hc:", options, help)) >= 0) {
                if (c != 't')
                        return ctl_bad_option(help, argv);
                if (ctl_parse_seconds(optarg, &a->timeout) < 0)
                        return ctl_usage_error(help, "--timeout takes seconds");
        }
        if (ctl->stop)
                return 0;
        if (optind != argc - 1)
                return ctl_usage_error(help, "give exactly one future ID");
        if (ctl_parse_id(argv[optind], &a->id) < 0)
                return ctl_usage_error(help, "'%s' is not a future ID", argv[optind]);
        return 0;
}

static int run_result(Ctl *ctl, const CtlCommand *cmd, void *args) {
        const ResultArgs *a = args;
        futured_outcome out;
        int r;

        r = ctl_connect(ctl);
        if (r)
                return r;
        r = futured_result(ctl->c, a->id, a->timeout, &out);
        if (r == -ETIMEDOUT) {
                fprintf(stderr, "futurectl: result: future %llu has not finished\n",
                        (unsigned long long) a->id);
                return EXIT_JOB_FAILED;
        }
        if (r < 0)
                return ctl_error(ctl, r, "result");
        r = print_outcome(ctl, a->id, &out);
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

static void ids_request_clear(void *args) {
        IdsRequest *q = args;

        free(q->ids);
        free(q->answers);
}

/* Parses argv[optind..argc) as future IDs into q->ids. Returns 0, or an exit status after
 * printing why. */
static int parse_id_list(Ctl *ctl, int argc, char **argv, IdsRequest *q) {
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

/* The skeleton of every ID command: options and IDs, then connect, call, print. */
static int parse_ids(Ctl *ctl, const CtlCommand *command, int argc, char **argv, void *args) {
        const IdsCommand *cmd = command->data;
        IdsRequest *q = args;
        int c, r;

        *q = (IdsRequest){ .cmd = cmd, .mode = FUTURED_ALL_COMPLETED, .timeout = -1 };
        while ((c = ctl_next_option(ctl, argc, argv, "hc:", cmd->options, cmd->help)) >= 0) {
                r = c == '?' || !cmd->option ? ctl_bad_option(cmd->help, argv) : cmd->option(q, c);
                if (r)
                        return r;
        }
        if (ctl->stop)
                return 0;
        return parse_id_list(ctl, argc, argv, q);
}

static int run_ids(Ctl *ctl, const CtlCommand *command, void *args) {
        const IdsCommand *cmd = command->data;
        IdsRequest *q = args;
        int r;

        q->answers = calloc(q->n, cmd->answer_size);
        if (!q->answers)
                return ctl_error(ctl, -ENOMEM, cmd->name);
        r = ctl_connect(ctl);
        if (r)
                return r;
        r = cmd->call(ctl->c, q);
        if (r < 0)
                return ctl_error(ctl, r, cmd->name);
        q->count = r;
        return cmd->print(ctl, q);
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

static int parse_stats(Ctl *ctl, const CtlCommand *cmd, int argc, char **argv, void *args) {
        static const char help[] = "Usage: futurectl stats\n\nPrints the daemon's counters.\n";
        int r = parse_common_only(ctl, argc, argv, help);

        if (r || ctl->stop)
                return r;
        if (optind != argc)
                return ctl_usage_error(help, "stats takes no arguments");
        return 0;
}

static int run_stats(Ctl *ctl, const CtlCommand *cmd, void *args) {
        return print_call(ctl, "stats", NULL, "stats");
}

typedef struct ListArgs {
        const char *state; /* borrowed from argv; NULL: every state */
        futured_id after, limit;
} ListArgs;

static int parse_list(Ctl *ctl, const CtlCommand *cmd, int argc, char **argv, void *args) {
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
        ListArgs *a = args;
        int c;

        a->limit = 100;
        while ((c = ctl_next_option(ctl, argc, argv, "hc:", options, help)) >= 0) {
                if (c == 's')
                        a->state = optarg;
                else if (c == 'a' && ctl_parse_id(optarg, &a->after) == 0)
                        continue;
                else if (c == 'l' && ctl_parse_id(optarg, &a->limit) == 0 && a->limit <= 10000)
                        continue;
                else if (c == 'a' || c == 'l')
                        return ctl_usage_error(help, "--%s takes a number",
                                               c == 'a' ? "after" : "limit");
                else
                        return ctl_bad_option(help, argv);
        }
        if (!ctl->stop && optind != argc)
                return ctl_usage_error(help, "list takes no arguments");
        return 0;
}

static int run_list(Ctl *ctl, const CtlCommand *cmd, void *args) {
        const ListArgs *a = args;
        const char *state = a->state;
        msgpack_sbuffer sb;
        msgpack_packer pk;
        _cleanup_free_ void *reply = NULL;
        msgpack_unpacked u;
        size_t len;
        int r;

        r = ctl_connect(ctl);
        if (r)
                return r;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 2 + !!state);
        proto_pack_str(&pk, "after");
        msgpack_pack_uint64(&pk, a->after);
        proto_pack_str(&pk, "limit");
        msgpack_pack_uint64(&pk, a->limit);
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

typedef struct WatchArgs {
        char **topics; /* borrowed from argv */
        size_t n_topics;
} WatchArgs;

static int parse_watch(Ctl *ctl, const CtlCommand *cmd, int argc, char **argv, void *args) {
        static const char help[] =
                "Usage: futurectl watch [TOPIC...]\n"
                "\n"
                "Prints events as they happen, one line each: the topic and the event as JSON.\n"
                "TOPIC is a prefix such as done/ (every completion), failed/, done/GROUP or\n"
                "progress/; the default is every event. Stops at Ctrl-C.\n";
        WatchArgs *a = args;
        int r;

        r = parse_common_only(ctl, argc, argv, help);
        if (r || ctl->stop)
                return r;
        a->topics = argv + optind;
        a->n_topics = (size_t) (argc - optind);
        return 0;
}

static int run_watch(Ctl *ctl, const CtlCommand *cmd, void *args) {
        const WatchArgs *a = args;
        char topic[256];
        int r;

        r = ctl_connect(ctl);
        if (r)
                return r;
        for (size_t i = 0; i < MAX(a->n_topics, (size_t) 1); i++) {
                r = futured_subscribe(ctl->c, i < a->n_topics ? a->topics[i] : "");
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

/* One job of `map`: its ARGS split at the commas. */
typedef struct MapJob {
        char *text;       /* owned: a copy of the ARGS, cut into parts */
        char *parts[64];  /* into text */
        size_t n_parts;
} MapJob;

typedef struct MapArgs {
        const char *kind; /* borrowed from argv */
        double timeout;
        MapJob *jobs;     /* owned, n of them */
        size_t n;
} MapArgs;

static void map_args_clear(void *args) {
        MapArgs *a = args;

        for (size_t i = 0; a->jobs && i < a->n; i++)
                free(a->jobs[i].text);
        free(a->jobs);
}

/* Splits a copy of "a,b,c" into j's parts. Returns 0, -ENOMEM, or -E2BIG past 64 parts. */
static int split_commas(const char *s, MapJob *j) {
        j->text = strdup(s);
        if (!j->text)
                return -ENOMEM;
        if (!*s)
                return 0;
        for (char *tok = j->text; tok; j->n_parts++) {
                char *comma = strchr(tok, ',');
                if (j->n_parts == ELEMENTSOF(j->parts))
                        return -E2BIG;
                j->parts[j->n_parts] = tok;
                if (comma)
                        *comma++ = '\0';
                tok = comma;
        }
        return 0;
}

static const char map_help[] =
        "Usage: futurectl map KIND ARGS... [--timeout S]\n"
        "\n"
        "Submits one job per ARGS in one batch and prints the results in input order,\n"
        "as Executor.map. ARGS holds a job's arguments separated by commas (at most 64), e.g.\n"
        "  futurectl map prime 97 98 n=99,method=miller-rabin\n"
        "Stops at the first failure (exit 1) and cancels the rest, as map() raises.\n";

static int parse_map(Ctl *ctl, const CtlCommand *cmd, int argc, char **argv, void *args) {
        static const struct option options[] = {
                CTL_COMMON_OPTIONS,
                { "timeout", required_argument, NULL, 't' },
                {},
        };
        MapArgs *a = args;
        int c, r;

        while ((c = ctl_next_option(ctl, argc, argv, "hc:", options, map_help)) >= 0) {
                if (c != 't')
                        return ctl_bad_option(map_help, argv);
                if (ctl_parse_seconds(optarg, &a->timeout) < 0)
                        return ctl_usage_error(map_help, "--timeout takes seconds");
        }
        if (ctl->stop)
                return 0;
        if (argc - optind < 2)
                return ctl_usage_error(map_help, "give a kind and at least one job's arguments");
        a->kind = argv[optind];
        a->jobs = calloc((size_t) (argc - optind - 1), sizeof *a->jobs);
        if (!a->jobs)
                return ctl_error(ctl, -ENOMEM, "map");
        for (int i = optind + 1; i < argc; i++) {
                r = split_commas(argv[i], &a->jobs[a->n++]);
                if (r == -E2BIG)
                        return ctl_usage_error(map_help, "a job takes at most %zu arguments",
                                               ELEMENTSOF(a->jobs[0].parts));
                if (r < 0)
                        return ctl_error(ctl, r, "map");
        }
        return 0;
}

static int run_map(Ctl *ctl, const CtlCommand *cmd, void *margs) {
        const MapArgs *a = margs;
        _cleanup_free_ futured_job *jobs = NULL;
        _cleanup_free_ futured_id *ids = NULL;
        void **args = NULL;
        size_t n = a->n;
        int r, status = EXIT_SUCCESS;

        jobs = calloc(n, sizeof *jobs);
        ids = calloc(n, sizeof *ids);
        args = calloc(n, sizeof *args);
        if (!jobs || !ids || !args) {
                free(args);
                return ctl_error(ctl, -ENOMEM, "map");
        }
        r = ctl_connect(ctl);
        for (size_t i = 0; r == 0 && i < n; i++) {
                const MapJob *j = &a->jobs[i];

                jobs[i].kind = a->kind;
                jobs[i].timeout = a->timeout;
                if (futured_args_pack(ctl->c, jobs[i].kind, (char **) j->parts, j->n_parts,
                                      &args[i], &jobs[i].args_len) < 0)
                        r = ctl_usage_error(map_help, "%s", futured_error_message(ctl->c));
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

typedef struct KeygenArgs {
        const char *out; /* borrowed from argv; NULL: print both keys */
} KeygenArgs;

static int parse_keygen(Ctl *ctl, const CtlCommand *cmd, int argc, char **argv, void *args) {
        static const char help[] =
                "Usage: futurectl keygen [--out PREFIX]\n"
                "Makes a CURVE key pair. With --out: PREFIX.key (both keys, mode 0600) and\n"
                "PREFIX.pub (the public key, for the daemon's allow list or a client's\n"
                "--server-key); without: prints both lines on standard output.\n";
        static const struct option options[] = {
                CTL_COMMON_OPTIONS,
                { "out", required_argument, NULL, 'o' },
                {},
        };
        KeygenArgs *a = args;
        int c;

        while ((c = ctl_next_option(ctl, argc, argv, "hc:o:", options, help)) >= 0) {
                if (c != 'o')
                        return ctl_bad_option(help, argv);
                a->out = optarg;
        }
        if (ctl->stop)
                return 0;
        if (optind < argc)
                return ctl_usage_error(help, "unexpected argument '%s'", argv[optind]);
        return 0;
}

/* keygen: a new key pair from libzmq (libsodium's random source); no daemon. */
static int run_keygen(Ctl *ctl, const CtlCommand *cmd, void *args) {
        char public_key[KEYFILE_KEY_LEN + 1], secret_key[KEYFILE_KEY_LEN + 1];
        const KeygenArgs *a = args;
        int r;

        if (zmq_curve_keypair(public_key, secret_key) < 0) {
                fprintf(stderr, "futurectl keygen: %s (libzmq without CURVE?)\n",
                        zmq_strerror(zmq_errno()));
                return EXIT_SOFTWARE;
        }
        if (!a->out) {
                printf("public %s\nsecret %s\n", public_key, secret_key);
                return EXIT_SUCCESS;
        }
        r = keyfile_write(a->out, public_key, secret_key);
        if (r < 0) {
                fprintf(stderr, "futurectl keygen: cannot write %s.key and %s.pub: %s\n", a->out,
                        a->out, strerror(-r));
                return r == -EEXIST ? EXIT_USAGE : EXIT_JOB_FAILED;
        }
        return EXIT_SUCCESS;
}

/* Every command. */
static const CtlCommand commands[] = {
        { "submit", sizeof(SubmitArgs), parse_submit, run_submit, NULL, submit_help },
        { "result", sizeof(ResultArgs), parse_result, run_result, NULL, NULL },
        { "list", sizeof(ListArgs), parse_list, run_list, NULL, NULL },
        { "stats", 0, parse_stats, run_stats, NULL, NULL },
        { "watch", sizeof(WatchArgs), parse_watch, run_watch, NULL, NULL },
        { "map", sizeof(MapArgs), parse_map, run_map, map_args_clear, NULL },
        { "keygen", sizeof(KeygenArgs), parse_keygen, run_keygen, NULL, NULL },
        { "status", sizeof(IdsRequest), parse_ids, run_ids, ids_request_clear, &ids_commands[0] },
        { "wait", sizeof(IdsRequest), parse_ids, run_ids, ids_request_clear, &ids_commands[1] },
        { "cancel", sizeof(IdsRequest), parse_ids, run_ids, ids_request_clear, &ids_commands[2] },
        { "release", sizeof(IdsRequest), parse_ids, run_ids, ids_request_clear, &ids_commands[3] },
};

static const CtlCommand *find_command(const char *name) {
        if (strcmp(name, primes_command.name) == 0)
                return &primes_command;
        if (strcmp(name, flags_command.name) == 0)
                return &flags_command;
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (strcmp(name, commands[i].name) == 0)
                        return &commands[i];
        return NULL;
}

/* Parses the global options before COMMAND (getopt stops at the first non-option, "+"), which
 * ctl_next_option() handles but --version; --help and --version print and set ctl->stop. Returns
 * 0 with optind at COMMAND, or an exit status after printing why. */
static int parse_global(Ctl *ctl, int argc, char **argv) {
        static const struct option options[] = {
                CTL_COMMON_OPTIONS,
                { "version", no_argument, NULL, 'V' },
                {},
        };
        int c;

        opterr = 0; /* our own messages, with the usage line */
        optind = 0; /* a fresh getopt: this may not be the first command line parsed */
        c = ctl_next_option(ctl, argc, argv, "+hc:", options, main_usage);
        if (c == 'V') {
                printf("futurectl %s\n", FUTURED_VERSION);
                ctl->stop = true;
                return 0;
        }
        if (c >= 0)
                return ctl_bad_option(main_usage, argv);
        if (ctl->stop)
                return 0;
        if (optind >= argc)
                return ctl_usage_error(main_usage, "no command given");
        return 0;
}

int ctl_parse(CtlInvocation *inv, int argc, char **argv) {
        const CtlCommand *cmd;
        int r;

        *inv = (CtlInvocation){};
        r = parse_global(&inv->ctl, argc, argv);
        if (r || inv->ctl.stop)
                return r;
        argc -= optind;
        argv += optind;
        cmd = find_command(argv[0]);
        if (!cmd)
                return ctl_usage_error(main_usage, "unknown command '%s'", argv[0]);
        inv->args = calloc(1, MAX(cmd->args_size, (size_t) 1));
        if (!inv->args)
                return ctl_error(&inv->ctl, -ENOMEM, cmd->name);
        inv->cmd = cmd;
        optind = 0; /* restart getopt for the command's options */
        return cmd->parse(&inv->ctl, cmd, argc, argv, inv->args);
}

int ctl_run(CtlInvocation *inv) {
        int r;

        if (inv->ctl.stop || !inv->cmd)
                return EXIT_SUCCESS;
        r = inv->cmd->run(&inv->ctl, inv->cmd, inv->args);
        /* Every command returns an exit status, never a negative errno (see futurectl.h). */
        assert(r >= 0 && r <= EXIT_OSERR);
        return r;
}

void ctl_invocation_clear(CtlInvocation *inv) {
        if (inv->cmd && inv->cmd->clear)
                inv->cmd->clear(inv->args);
        free(inv->args);
        futured_free(inv->ctl.c);
        *inv = (CtlInvocation){};
}
