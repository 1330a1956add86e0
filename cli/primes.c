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

int cmd_primes(Ctl *ctl, int argc, char **argv) {
        static const char help[] =
                "Usage: futurectl primes [N...] [--as-completed] [--method trial|miller-rabin]\n"
                "\n"
                "The classic prime checker: checks each N (default: the 20 numbers of the\n"
                "classic benchmark, tests/data/primes.tsv) as one job in the daemon's process\n"
                "pool and prints n, P for a prime, and the seconds the check took; then the\n"
                "total time. Results print in input order, or with --as-completed in the order\n"
                "they finish. Ctrl-C cancels what is still running.\n";
        static const struct option options[] = {
                CTL_COMMON_OPTIONS,
                { "as-completed", no_argument, NULL, 'a' },
                { "method", required_argument, NULL, 'm' },
                {},
        };
        _cleanup_free_ Check *checks = NULL;
        _cleanup_free_ futured_job *jobs = NULL;
        _cleanup_free_ futured_id *ids = NULL;
        msgpack_sbuffer *args = NULL;
        const char *method = NULL;
        bool as_completed = false, first = true, all_ok = true;
        futured_as_completed *it = NULL;
        size_t n;
        double start;
        int c, r;

        while ((c = ctl_next_option(ctl, argc, argv, "hc:", options, help)) >= 0) {
                if (c == 'a')
                        as_completed = true;
                else if (c != 'm')
                        return ctl_bad_option(help, argv);
                else if (strcmp(optarg, "trial") == 0 || strcmp(optarg, "miller-rabin") == 0)
                        method = optarg;
                else
                        return ctl_usage_error(help, "--method is trial or miller-rabin");
        }
        n = optind < argc ? (size_t) (argc - optind) : ELEMENTSOF(classic_numbers);
        checks = calloc(n, sizeof *checks);
        jobs = calloc(n, sizeof *jobs);
        ids = calloc(n, sizeof *ids);
        args = calloc(n, sizeof *args);
        if (!checks || !jobs || !ids || !args) {
                free(args);
                return ctl_error(ctl, -ENOMEM, "primes");
        }
        for (size_t i = 0; i < n; i++) {
                if (optind < argc) {
                        const char *s = argv[optind + (int) i];
                        char *end;
                        errno = 0;
                        checks[i].n = strtoull(s, &end, 10);
                        if (*s < '0' || *s > '9' || *end || errno) {
                                free(args);
                                return ctl_usage_error(help, "'%s' is not a number from 0 to 2^64-1",
                                                       s);
                        }
                } else
                        checks[i].n = classic_numbers[i];
        }
        r = ctl_connect(ctl);
        if (r) {
                free(args);
                return r;
        }
        for (size_t i = 0; i < n; i++) {
                msgpack_packer pk;

                msgpack_sbuffer_init(&args[i]);
                msgpack_packer_init(&pk, &args[i], msgpack_sbuffer_write);
                msgpack_pack_map(&pk, 1 + !!method);
                proto_pack_str(&pk, "n");
                msgpack_pack_uint64(&pk, checks[i].n);
                if (method) {
                        proto_pack_str(&pk, "method");
                        proto_pack_str(&pk, method);
                }
                jobs[i] = (futured_job){ .kind = "prime", .args = args[i].data,
                                         .args_len = args[i].size };
        }

        ctl_catch_interrupts();
        if (ctl->json)
                printf("{\"processes\":%u,\"results\":[", futured_processes(ctl->c));
        else
                printf("Checking %zu numbers with %u processes:\n", n, futured_processes(ctl->c));
        fflush(stdout);
        start = now_seconds();
        r = futured_submit(ctl->c, jobs, n, ids);
        for (size_t i = 0; r >= 0 && i < n; i++)
                checks[i].id = ids[i];
        if (r >= 0 && as_completed)
                r = futured_as_completed_new(ctl->c, ids, n, -1, &it);
        for (size_t done = 0; r >= 0 && done < n && !ctl_interrupted(); done++) {
                futured_outcome out;
                size_t k = done;
                futured_id id;

                if (it) {
                        r = futured_as_completed_next(it, &id);
                        if (r <= 0)
                                break;
                        for (k = 0; checks[k].id != id || checks[k].printed; k++)
                                ;
                }
                r = futured_result(ctl->c, checks[k].id, -1, &out);
                if (r < 0)
                        break;
                checks[k].printed = true;
                all_ok &= print_check(ctl, &checks[k], &out, &first);
                futured_outcome_clear(&out);
        }
        futured_as_completed_free(it);
        if (ctl_interrupted() || r == -EINTR) {
                (void) futured_cancel(ctl->c, ids, n, NULL);
                fprintf(stderr, "futurectl: primes: interrupted; the remaining checks are "
                                "cancelled\n");
                r = EXIT_JOB_FAILED;
        } else if (r < 0)
                r = ctl_error(ctl, r, "primes");
        else
                r = all_ok ? EXIT_SUCCESS : EXIT_JOB_FAILED;
        if (ctl->json)
                printf("],\"total\":%.6f}\n", now_seconds() - start);
        else
                printf("Total time: %.2fs\n", now_seconds() - start);
        for (size_t i = 0; i < n; i++)
                msgpack_sbuffer_destroy(&args[i]);
        free(args);
        return r;
}
