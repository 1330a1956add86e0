/* primes: `futurectl primes`, the classic prime checker run through the daemon's process pool.
 * With no numbers it checks the 20 numbers of tests/data/primes.tsv, which meson compiles in as
 * PRIMES_NUMBERS (only the numbers: the answers come from the daemon). */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "cli-config.h"
#include "futurectl.h"
#include "json.h"
#include "macro.h"
#include "now.h"
#include "proto.h"

static const uint64_t classic_numbers[] = { PRIMES_NUMBERS };

typedef struct Check {
        uint64_t n;
        futured_id id;
        bool printed;
} Check;

/* Prints one finished check; returns false if the job did not produce a result. */
static bool print_check(Ctl *ctl, const Check *ck, const futured_outcome *out, bool *first) {
        msgpack_unpacked u;
        bool is_prime = false;
        double elapsed = 0;
        uint64_t factor = 0;

        if (out->state != FUTURED_DONE) {
                fprintf(stderr, "futurectl: primes: %llu: %s%s%s\n", (unsigned long long) ck->n,
                        futured_state_name(out->state), out->failure_code[0] ? ": " : "",
                        out->failure_message);
                return false;
        }
        msgpack_unpacked_init(&u);
        if (msgpack_unpack_next(&u, out->result, out->result_len, NULL) == MSGPACK_UNPACK_SUCCESS) {
                const msgpack_object *o = proto_map_get(&u.data, "is_prime");
                is_prime = o && o->type == MSGPACK_OBJECT_BOOLEAN && o->via.boolean;
                (void) proto_get_number(proto_map_get(&u.data, "elapsed"), &elapsed);
                (void) proto_get_uint(proto_map_get(&u.data, "smallest_factor"), &factor);
        }
        msgpack_unpacked_destroy(&u);
        if (ctl->json)
                printf("%s{\"n\":%llu,\"id\":%llu,\"is_prime\":%s,\"smallest_factor\":%llu,"
                       "\"elapsed\":%.6f}",
                       *first ? "" : ",", (unsigned long long) ck->n, (unsigned long long) ck->id,
                       is_prime ? "true" : "false", (unsigned long long) factor, elapsed);
        else
                printf("%16llu  %c %9.6fs\n", (unsigned long long) ck->n, is_prime ? 'P' : ' ',
                       elapsed);
        fflush(stdout);
        *first = false;
        return true;
}

static const char help[] =
        "Usage: futurectl primes [N...] [--as-completed] [--method trial|miller-rabin]\n"
        "\n"
        "The classic prime checker: checks each N (default: the 20 numbers of the\n"
        "classic benchmark, tests/data/primes.tsv) as one job in the daemon's process\n"
        "pool and prints n, P for a prime, and the seconds the check took; then the\n"
        "total time. Results print in input order, or with --as-completed in the order\n"
        "they finish. Ctrl-C cancels what is still running.\n";

/* One run of `primes`: its options, its numbers and their jobs. */
typedef struct Primes {
        const char *method; /* borrowed from argv; NULL: the daemon's default */
        bool as_completed;
        size_t n;
        Check *checks;     /* owned, n of them */
        futured_job *jobs; /* owned, n of them, each with its own args */
        futured_id *ids;   /* owned, n of them */
        double start;      /* when the jobs were submitted */
} Primes;

static void primes_clear(Primes *p) {
        for (size_t i = 0; p->jobs && i < p->n; i++)
                free((void *) p->jobs[i].args);
        free(p->checks);
        free(p->jobs);
        free(p->ids);
}

/* Step 1: the options. Returns 0, or an exit status after printing why. */
static int parse_options(Ctl *ctl, int argc, char **argv, Primes *p) {
        static const struct option options[] = {
                CTL_COMMON_OPTIONS,
                { "as-completed", no_argument, NULL, 'a' },
                { "method", required_argument, NULL, 'm' },
                {},
        };
        int c;

        while ((c = ctl_next_option(ctl, argc, argv, "hc:", options, help)) >= 0) {
                if (c == 'a')
                        p->as_completed = true;
                else if (c != 'm')
                        return ctl_bad_option(help, argv);
                else if (strcmp(optarg, "trial") == 0 || strcmp(optarg, "miller-rabin") == 0)
                        p->method = optarg;
                else
                        return ctl_usage_error(help, "--method is trial or miller-rabin");
        }
        return 0;
}

/* Step 2: the numbers, argv[optind..argc) or the classic ones. Returns 0, or an exit status after
 * printing why. */
static int parse_numbers(Ctl *ctl, int argc, char **argv, Primes *p) {
        p->n = optind < argc ? (size_t) (argc - optind) : ELEMENTSOF(classic_numbers);
        p->checks = calloc(p->n, sizeof *p->checks);
        p->jobs = calloc(p->n, sizeof *p->jobs);
        p->ids = calloc(p->n, sizeof *p->ids);
        if (!p->checks || !p->jobs || !p->ids)
                return ctl_error(ctl, -ENOMEM, "primes");
        for (size_t i = 0; i < p->n; i++) {
                const char *s;
                char *end;

                if (optind >= argc) {
                        p->checks[i].n = classic_numbers[i];
                        continue;
                }
                s = argv[optind + (int) i];
                errno = 0;
                p->checks[i].n = strtoull(s, &end, 10);
                if (*s < '0' || *s > '9' || *end || errno)
                        return ctl_usage_error(help, "'%s' is not a number from 0 to 2^64-1", s);
        }
        return 0;
}

/* Step 3: one `prime` job per number. */
static void pack_jobs(Primes *p) {
        for (size_t i = 0; i < p->n; i++) {
                msgpack_sbuffer sb;
                msgpack_packer pk;

                msgpack_sbuffer_init(&sb);
                msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
                msgpack_pack_map(&pk, 1 + !!p->method);
                proto_pack_str(&pk, "n");
                msgpack_pack_uint64(&pk, p->checks[i].n);
                if (p->method) {
                        proto_pack_str(&pk, "method");
                        proto_pack_str(&pk, p->method);
                }
                p->jobs[i] = (futured_job){ .kind = "prime", .args_len = sb.size };
                p->jobs[i].args = msgpack_sbuffer_release(&sb);
        }
}

/* Step 4: the header, then every job in one batch; the clock starts. Returns 0 or a negative
 * errno. */
static int submit_checks(Ctl *ctl, Primes *p) {
        int r;

        if (ctl->json)
                printf("{\"processes\":%u,\"results\":[", futured_processes(ctl->c));
        else
                printf("Checking %zu numbers with %u processes:\n", p->n,
                       futured_processes(ctl->c));
        fflush(stdout);
        p->start = now_seconds();
        r = futured_submit(ctl->c, p->jobs, p->n, p->ids);
        if (r < 0)
                return r;
        for (size_t i = 0; i < p->n; i++)
                p->checks[i].id = p->ids[i];
        return 0;
}

/* Step 5: takes each result, in input order or with --as-completed as they finish, and prints
 * it; stops early at Ctrl-C. Clears *all_ok when a check produced no result. Returns 0 or a
 * negative errno. */
static int collect_checks(Ctl *ctl, Primes *p, bool *all_ok) {
        _cleanup_(futured_as_completed_freep) futured_as_completed *it = NULL;
        bool first = true;
        int r = 0;

        if (p->as_completed)
                r = futured_as_completed_new(ctl->c, p->ids, p->n, -1, &it);
        for (size_t done = 0; r >= 0 && done < p->n && !ctl_interrupted(); done++) {
                futured_outcome out;
                size_t k = done;
                futured_id id;

                if (it) {
                        r = futured_as_completed_next(it, &id);
                        if (r <= 0)
                                break;
                        for (k = 0; p->checks[k].id != id || p->checks[k].printed; k++)
                                ;
                }
                r = futured_result(ctl->c, p->checks[k].id, -1, &out);
                if (r < 0)
                        break;
                p->checks[k].printed = true;
                *all_ok &= print_check(ctl, &p->checks[k], &out, &first);
                futured_outcome_clear(&out);
        }
        return MIN(r, 0);
}

/* Step 6: cancels what is left after Ctrl-C, ends the output with the total time, and returns
 * the exit status for `r`, what the submit and collect steps returned. */
static int report(Ctl *ctl, const Primes *p, int r, bool all_ok) {
        int status;

        if (ctl_interrupted() || r == -EINTR) {
                (void) futured_cancel(ctl->c, p->ids, p->n, NULL);
                fprintf(stderr, "futurectl: primes: interrupted; the remaining checks are "
                                "cancelled\n");
                status = EXIT_JOB_FAILED;
        } else if (r < 0)
                status = ctl_error(ctl, r, "primes");
        else
                status = all_ok ? EXIT_SUCCESS : EXIT_JOB_FAILED;
        if (ctl->json)
                printf("],\"total\":%.6f}\n", now_seconds() - p->start);
        else
                printf("Total time: %.2fs\n", now_seconds() - p->start);
        return status;
}

static int parse_primes(Ctl *ctl, const CtlCommand *cmd, int argc, char **argv, void *args) {
        int r = parse_options(ctl, argc, argv, args);

        if (r || ctl->stop)
                return r;
        return parse_numbers(ctl, argc, argv, args);
}

static int run_primes(Ctl *ctl, const CtlCommand *cmd, void *args) {
        Primes *p = args;
        bool all_ok = true;
        int r;

        r = ctl_connect(ctl);
        if (r)
                return r;
        pack_jobs(p);
        ctl_catch_interrupts();
        r = submit_checks(ctl, p);
        if (r == 0)
                r = collect_checks(ctl, p, &all_ok);
        return report(ctl, p, r, all_ok);
}

static void primes_clear_args(void *args) {
        primes_clear(args);
}

const CtlCommand primes_command = {
        .name = "primes",
        .args_size = sizeof(Primes),
        .parse = parse_primes,
        .run = run_primes,
        .clear = primes_clear_args,
};
