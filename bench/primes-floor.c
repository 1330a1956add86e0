/* bench-primes-floor: the floor for `futurectl primes`. The numbers of tests/data/primes.tsv are
 * checked with workers/prime.c's prime_trial() itself (the very function the daemon's workers
 * run, linked from libjobs) by N forked processes (default 2) that take the next number from a
 * counter in MAP_SHARED memory, as a process pool takes the next job from its queue. No daemon, no
 * messages, no serialisation: what is left is the arithmetic and a fork per process.
 *
 * Usage: bench-primes-floor PRIMES.TSV [PROCESSES]
 *
 * Prints one line per number in input order (n, P for a prime, the seconds its check took), then
 * "Total time", then machine-readable `key value` lines (`wall_s`, `cpu_s`, `processes`,
 * `numbers`) for bench/run. The wall time runs from just before the first fork to the last
 * waitpid(). Exit status 1 if an answer disagrees with the file's is_prime/smallest_factor. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "prime.h"

#define MAX_NUMBERS 1024
#define MAX_PROCESSES 256

typedef struct Number {
        uint64_t n;
        uint64_t expect_factor; /* from the file's smallest_factor column */
        bool expect_prime;
} Number;

/* The shared page: the work queue's head and the answers, written by the children. */
typedef struct Shared {
        atomic_size_t next;
        uint64_t factor[MAX_NUMBERS];
        double elapsed[MAX_NUMBERS];
} Shared;

static double now_seconds(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void fclosep(FILE **f) {
        if (*f)
                fclose(*f);
}

/* Reads the TSV at `path` (header line, then n, is_prime, smallest_factor) into `numbers`, which
 * the caller owns and which holds MAX_NUMBERS. Returns the count, or -errno. */
static int read_numbers(const char *path, Number *numbers) {
        _cleanup_(fclosep) FILE *f = fopen(path, "re");
        char line[256], prime[16];
        int count = 0;

        if (!f)
                return -errno;
        if (!fgets(line, sizeof line, f))
                return -EINVAL;
        while (fgets(line, sizeof line, f)) {
                Number *x;

                if (line[0] == '\n' || line[0] == '#')
                        continue;
                if (count == MAX_NUMBERS)
                        return -E2BIG;
                x = &numbers[count];
                if (sscanf(line, "%" SCNu64 " %15s %" SCNu64, &x->n, prime, &x->expect_factor) != 3)
                        return -EINVAL;
                x->expect_prime = strcmp(prime, "true") == 0;
                count++;
        }
        return count;
}

/* A pool process: takes numbers off the shared counter until none is left and writes the answers
 * into `sh`. Both `sh` and `numbers` are borrowed (the parent's, inherited). Never returns. */
static _Noreturn void child_main(Shared *sh, const Number *numbers, size_t count) {
        for (;;) {
                size_t i = atomic_fetch_add(&sh->next, 1);
                double start;

                if (i >= count)
                        _exit(EXIT_SUCCESS);
                start = now_seconds();
                sh->factor[i] = prime_trial(numbers[i].n);
                sh->elapsed[i] = now_seconds() - start;
        }
}

int main(int argc, char **argv) {
        static Number numbers[MAX_NUMBERS];
        pid_t pids[MAX_PROCESSES];
        unsigned long processes = 2;
        struct timespec cpu;
        struct rusage ru;
        double start, wall, child_cpu = 0;
        bool all_right = true;
        Shared *sh;
        int count;

        if (argc < 2 || argc > 3 || strcmp(argv[1], "--help") == 0) {
                fprintf(stderr, "Usage: %s PRIMES.TSV [PROCESSES]\n", argv[0]);
                return 2;
        }
        if (argc == 3) {
                char *end;
                processes = strtoul(argv[2], &end, 10);
                if (*end || processes < 1 || processes > MAX_PROCESSES) {
                        fprintf(stderr, "%s: PROCESSES is 1 to %d\n", argv[0], MAX_PROCESSES);
                        return 2;
                }
        }
        count = read_numbers(argv[1], numbers);
        if (count < 0) {
                fprintf(stderr, "%s: cannot read %s: %s\n", argv[0], argv[1], strerror(-count));
                return 2;
        }
        sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (sh == MAP_FAILED) {
                fprintf(stderr, "%s: mmap: %m\n", argv[0]);
                return 1;
        }
        atomic_init(&sh->next, 0);
        printf("Checking %d numbers with %lu processes:\n", count, processes);
        fflush(stdout);

        start = now_seconds();
        for (unsigned long p = 0; p < processes; p++) {
                pids[p] = fork();
                if (pids[p] < 0) {
                        fprintf(stderr, "%s: fork: %m\n", argv[0]);
                        return 1;
                }
                if (pids[p] == 0)
                        child_main(sh, numbers, (size_t) count);
        }
        for (unsigned long p = 0; p < processes; p++) {
                int status;

                while (waitpid(pids[p], &status, 0) < 0 && errno == EINTR)
                        ;
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                        all_right = false;
        }
        wall = now_seconds() - start;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);

        for (int i = 0; i < count; i++) {
                const Number *x = &numbers[i];
                bool is_prime = x->n >= 2 && sh->factor[i] == x->n;

                printf("%16" PRIu64 "  %c %9.6fs\n", x->n, is_prime ? 'P' : ' ', sh->elapsed[i]);
                if (is_prime != x->expect_prime || sh->factor[i] != x->expect_factor) {
                        fprintf(stderr, "%s: %" PRIu64 ": got factor %" PRIu64 ", the file says %"
                                PRIu64 "\n", argv[0], x->n, sh->factor[i], x->expect_factor);
                        all_right = false;
                }
        }
        printf("Total time: %.2fs\n", wall);
        printf("wall_s %.6f\n", wall);
        if (getrusage(RUSAGE_CHILDREN, &ru) == 0)
                child_cpu = (double) ru.ru_utime.tv_sec + (double) ru.ru_utime.tv_usec / 1e6 +
                            (double) ru.ru_stime.tv_sec + (double) ru.ru_stime.tv_usec / 1e6;
        printf("cpu_s %.6f\n", child_cpu + (double) cpu.tv_sec + (double) cpu.tv_nsec / 1e9);
        printf("processes %lu\nnumbers %d\n", processes, count);
        munmap(sh, sizeof *sh);
        return all_right ? EXIT_SUCCESS : EXIT_FAILURE;
}
