/* flags: `futurectl flags`, the classic flags2 downloader run through the daemon's transfer pool.
 *
 * Every flag is one `download` job with an inline body; the jobs of one run share a group whose
 * limit is the run's concurrency, so the daemon (not this client) enforces -m, and several runs
 * at once each get their own limit. Results are taken in completion order and written into
 * --dest here, so the destination is the user's directory whoever the daemon runs as. */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli-config.h"
#include "futurectl.h"
#include "json.h"
#include "macro.h"
#include "now.h"
#include "progress.h"
#include "proto.h"

#define N_CODES (26 * 26)
#define MAX_CONCUR_REQ 1000
#define DEFAULT_CONCUR_REQ 30
#define FETCH_BATCH 256 /* results fetched in one round trip */

static const char *const servers[][2] = {
        { "LOCAL", "http://localhost:8000/flags" },
        { "REMOTE", "https://www.fluentpython.com/data/flags" },
        { "DELAY", "http://localhost:8001/flags" },
        { "ERROR", "http://localhost:8002/flags" },
};

/* The 20 most populous countries: the classic default. */
static const char default_codes[] = "CN IN US ID BR PK NG BD RU JP MX PH VN ET EG DE IR TR CD FR";
/* tests/data/country_codes.txt, compiled in by meson. */
static const char all_codes[] = COUNTRY_CODES;

static const char help[] =
        "Usage: futurectl flags [CC...] [-a|--all] [-e|--every] [-l|--limit N] [-m|--max-req N]\n"
        "                       [-s|--server LABEL] [--base-url URL] [-v|--verbose] [--dest DIR]\n"
        "\n"
        "The classic flag downloader, through the daemon: downloads BASE/{cc}/{cc}.gif for each\n"
        "country code into DIR/{CC}.gif and reports how many were downloaded, not found, or\n"
        "failed.\n"
        "\n"
        "  CC                 a code AA..ZZ, or one letter A..Z for its 26 codes\n"
        "                     (default: the 20 most populous countries)\n"
        "  -a, --all          every country code (194)\n"
        "  -e, --every        every code from AA to ZZ (676); beats -a, which beats CC\n"
        "  -l, --limit N      only the first N codes\n"
        "  -m, --max-req N    concurrent requests (default 30, at most 1000), enforced by the\n"
        "                     daemon\n"
        "  -s, --server LABEL LOCAL (http://localhost:8000/flags, the default), DELAY (:8001),\n"
        "                     ERROR (:8002) or REMOTE (https://www.fluentpython.com/data/flags)\n"
        "      --base-url URL any other server\n"
        "  -v, --verbose      one line per code instead of a progress bar\n"
        "      --dest DIR     where the files go (default downloaded/)\n"
        "      --json         one machine-readable summary\n"
        "\n"
        "The daemon downloads: a server on its own machine (the localhost ones) needs\n"
        "futured --download-allow 127.0.0.0/8, or every flag fails with download_denied.\n"
        "Ctrl-C cancels the downloads still outstanding and prints the report so far.\n"
        "Exit status: 0 all downloaded or not found, 1 some failed or interrupted.\n";

typedef enum Outcome {
        OUTCOME_NONE,
        OUTCOME_OK,
        OUTCOME_NOT_FOUND,
        OUTCOME_ERROR,
} Outcome;

typedef struct Flag {
        char cc[3];
        futured_id id;
        Outcome outcome;
        char *message; /* for errors and not-found: what to report (owned) */
} Flag;

/* Marks the codes named by `words` (whitespace-separated) in `set`. Returns 0, or -EINVAL naming
 * the bad word in `bad`. */
static int add_code(bool *set, const char *word, size_t len) {
        char a = (char) toupper((unsigned char) word[0]);

        if (len == 1 && a >= 'A' && a <= 'Z') {
                for (int i = 0; i < 26; i++)
                        set[(a - 'A') * 26 + i] = true;
                return 0;
        }
        if (len == 2) {
                char b = (char) toupper((unsigned char) word[1]);
                if (a >= 'A' && a <= 'Z' && b >= 'A' && b <= 'Z') {
                        set[(a - 'A') * 26 + (b - 'A')] = true;
                        return 0;
                }
        }
        return -EINVAL;
}

static void add_words(bool *set, const char *words) {
        for (const char *p = words; *p;) {
                size_t len = strcspn(p, " \t\n");
                if (len)
                        (void) add_code(set, p, len);
                p += len;
                p += strspn(p, " \t\n");
        }
}

/* Gives the unnamed file `fd` the name dir/name, replacing a file of that name. */
static int link_unnamed(int fd, int dir_fd, const char *name) {
        char proc[64];

        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        if (linkat(AT_FDCWD, proc, dir_fd, name, AT_SYMLINK_FOLLOW) == 0)
                return 0;
        if (errno != EEXIST || unlinkat(dir_fd, name, 0) < 0)
                return -errno;
        return linkat(AT_FDCWD, proc, dir_fd, name, AT_SYMLINK_FOLLOW) < 0 ? -errno : 0;
}

/* Writes `len` bytes to dir/name: an unnamed file (O_TMPFILE) that gets its name only once it is
 * complete, so no partial file is ever seen; a temporary name and rename where the file system
 * has no O_TMPFILE. */
static int save_file(int dir_fd, const char *name, const void *data, size_t len) {
        char tmp[64];
        int fd, r = 0;
        bool unnamed = true;

        fd = openat(dir_fd, ".", O_WRONLY | O_TMPFILE | O_CLOEXEC, 0644);
        if (fd < 0) {
                unnamed = false;
                snprintf(tmp, sizeof tmp, ".%s.%d.tmp", name, (int) getpid());
                fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        }
        if (fd < 0)
                return -errno;
        for (size_t off = 0; off < len && r == 0;) {
                ssize_t n = write(fd, (const char *) data + off, len - off);
                if (n < 0 && errno != EINTR)
                        r = -errno;
                else if (n > 0)
                        off += (size_t) n;
        }
        if (unnamed) {
                if (r == 0)
                        r = link_unnamed(fd, dir_fd, name);
                if (close(fd) < 0 && r == 0)
                        r = -errno;
                return r;
        }
        if (close(fd) < 0 && r == 0)
                r = -errno;
        if (r == 0 && renameat(dir_fd, tmp, dir_fd, name) < 0)
                r = -errno;
        if (r < 0)
                (void) unlinkat(dir_fd, tmp, 0);
        return r;
}

/* The flag whose future is `id` (one of theirs). futured numbers one submit batch in order, so
 * a binary search finds it; the scan is for a daemon that would not. */
static Flag *flag_of(Flag *flags, size_t n, futured_id id) {
        size_t lo = 0, hi = n;

        while (hi - lo > 1) {
                size_t mid = lo + (hi - lo) / 2;
                if (flags[mid].id <= id)
                        lo = mid;
                else
                        hi = mid;
        }
        for (size_t i = 0; flags[lo].id != id && i < n; i++)
                if (flags[i].id == id)
                        lo = i;
        return &flags[lo];
}

/* Turns one finished future into its outcome, saving the flag when there is one. */
static void settle(Flag *f, const futured_outcome *o, int dest_fd) {
        msgpack_unpacked u;

        if (o->state == FUTURED_FAILED) {
                f->outcome = OUTCOME_ERROR;
                f->message = strdup(o->failure_message[0] ? o->failure_message : o->failure_code);
                return;
        }
        if (o->state != FUTURED_DONE) {
                f->outcome = OUTCOME_ERROR;
                f->message = strdup(futured_state_name(o->state));
                return;
        }
        msgpack_unpacked_init(&u);
        f->outcome = OUTCOME_ERROR;
        if (msgpack_unpack_next(&u, o->result, o->result_len, NULL) == MSGPACK_UNPACK_SUCCESS) {
                const msgpack_object *st = proto_map_get(&u.data, "status");
                const msgpack_object *body = proto_map_get(&u.data, "body");

                if (proto_str_eq(st, "not_found")) {
                        f->outcome = OUTCOME_NOT_FOUND;
                        f->message = proto_strdup(proto_map_get(&u.data, "url"), 4096);
                } else if (proto_str_eq(st, "ok") && body && body->type == MSGPACK_OBJECT_BIN) {
                        char name[8];
                        int r;

                        snprintf(name, sizeof name, "%s.gif", f->cc);
                        r = save_file(dest_fd, name, body->via.bin.ptr, body->via.bin.size);
                        if (r == 0)
                                f->outcome = OUTCOME_OK;
                        else if (asprintf(&f->message, "cannot save %s: %s", name, strerror(-r)) < 0)
                                f->message = NULL;
                }
        }
        if (f->outcome == OUTCOME_ERROR && !f->message)
                f->message = strdup("unexpected result");
        msgpack_unpacked_destroy(&u);
}

static void print_verbose(const Flag *f) {
        if (f->outcome == OUTCOME_OK)
                printf("%s OK\n", f->cc);
        else if (f->outcome == OUTCOME_NOT_FOUND)
                printf("%s not found: %s\n", f->cc, f->message ?: "");
        else
                printf("%s error: %s\n", f->cc, f->message ?: "");
        fflush(stdout);
}

/* One run of `flags`: its options, its flags and how they ended. */
typedef struct FlagsRun {
        bool every, all, verbose;
        const char *label, *base, *dest; /* borrowed from argv or static */
        unsigned long limit, max_req;
        Flag *flags;     /* owned, n of them, in code order */
        futured_id *ids; /* owned, flags[i].id in an array of their own for libfutured */
        size_t n;
        unsigned concurrency;
        int dest_fd;     /* owned */
        size_t count[4]; /* flags per Outcome */
        bool stopped;    /* by Ctrl-C */
        double start;    /* when the jobs were submitted */
} FlagsRun;

static void flags_run_clear(FlagsRun *run) {
        for (size_t i = 0; run->flags && i < run->n; i++)
                free(run->flags[i].message);
        free(run->flags);
        free(run->ids);
        closep(&run->dest_fd);
}

static void print_json(const FlagsRun *run) {
        static const char *const names[] = { "pending", "ok", "not_found", "error" };

        fputs("{\"server\":", stdout);
        json_print_string(stdout, run->label, strlen(run->label));
        fputs(",\"base_url\":", stdout);
        json_print_string(stdout, run->base, strlen(run->base));
        printf(",\"requested\":%zu,\"concurrency\":%u,\"downloaded\":%zu,\"not_found\":%zu,"
               "\"errors\":%zu,\"elapsed\":%.3f,\"interrupted\":%s,\"flags\":[",
               run->n, run->concurrency, run->count[OUTCOME_OK], run->count[OUTCOME_NOT_FOUND],
               run->count[OUTCOME_ERROR], now_seconds() - run->start,
               run->stopped ? "true" : "false");
        for (size_t i = 0; i < run->n; i++) {
                const Flag *f = &run->flags[i];

                printf("%s{\"cc\":\"%s\",\"status\":\"%s\"", i ? "," : "", f->cc,
                       names[f->outcome]);
                if (f->outcome == OUTCOME_ERROR && f->message) {
                        fputs(",\"error\":", stdout);
                        json_print_string(stdout, f->message, strlen(f->message));
                }
                putchar('}');
        }
        puts("]}");
}

static void print_summary(const FlagsRun *run) {
        const size_t *count = run->count;

        if (run->stopped)
                puts("*** Interrupted: outstanding downloads cancelled.");
        puts("--------------------");
        printf("%3zu flag%s downloaded.\n", count[OUTCOME_OK], count[OUTCOME_OK] == 1 ? "" : "s");
        if (count[OUTCOME_NOT_FOUND])
                printf("%3zu not found.\n", count[OUTCOME_NOT_FOUND]);
        if (count[OUTCOME_ERROR])
                printf("%3zu error%s.\n", count[OUTCOME_ERROR],
                       count[OUTCOME_ERROR] == 1 ? "" : "s");
        printf("Elapsed time: %.2fs\n", now_seconds() - run->start);
}

static int parse_count(const char *s, unsigned long *ret) {
        char *end;

        errno = 0;
        if (*s < '0' || *s > '9')
                return -EINVAL;
        *ret = strtoul(s, &end, 10);
        return *end || errno || *ret == 0 ? -EINVAL : 0;
}

/* Step 1: the options. Returns 0, or an exit status after printing why. */
static int parse_options(Ctl *ctl, int argc, char **argv, FlagsRun *run) {
        static const struct option options[] = {
                CTL_COMMON_OPTIONS,
                { "all", no_argument, NULL, 'a' },
                { "every", no_argument, NULL, 'e' },
                { "limit", required_argument, NULL, 'l' },
                { "max-req", required_argument, NULL, 'm' },
                { "server", required_argument, NULL, 's' },
                { "base-url", required_argument, NULL, 'b' },
                { "verbose", no_argument, NULL, 'v' },
                { "dest", required_argument, NULL, 'd' },
                {},
        };
        int c;

        while ((c = ctl_next_option(ctl, argc, argv, "hc:ael:m:s:v", options, help)) >= 0) {
                switch (c) {
                case 'a':
                        run->all = true;
                        break;
                case 'e':
                        run->every = true;
                        break;
                case 'l':
                        if (parse_count(optarg, &run->limit) < 0)
                                return ctl_usage_error(help, "--limit takes a positive number");
                        break;
                case 'm':
                        if (parse_count(optarg, &run->max_req) < 0)
                                return ctl_usage_error(help, "--max-req takes a positive number");
                        break;
                case 's':
                        run->label = NULL;
                        for (size_t i = 0; i < ELEMENTSOF(servers); i++)
                                if (strcasecmp(optarg, servers[i][0]) == 0)
                                        run->label = servers[i][0];
                        if (!run->label)
                                return ctl_usage_error(help,
                                                       "unknown server '%s': LOCAL, REMOTE, "
                                                       "DELAY or ERROR",
                                                       optarg);
                        break;
                case 'b':
                        run->base = optarg;
                        break;
                case 'v':
                        run->verbose = true;
                        break;
                case 'd':
                        run->dest = optarg;
                        break;
                default:
                        return ctl_bad_option(help, argv);
                }
        }
        return 0;
}

/* Step 2: the flags. -e beats -a beats the CC arguments; the codes are then de-duplicated,
 * sorted and cut to --limit. Returns 0, or an exit status after printing why. */
static int pick_flags(Ctl *ctl, int argc, char **argv, FlagsRun *run) {
        bool set[N_CODES] = {};

        for (int i = optind; i < argc; i++)
                if (add_code(set, argv[i], strlen(argv[i])) < 0)
                        return ctl_usage_error(help,
                                               "'%s': each CC argument must be A to Z or AA to ZZ",
                                               argv[i]);
        if (run->every)
                memset(set, true, sizeof set);
        else if (run->all) {
                memset(set, false, sizeof set);
                add_words(set, all_codes);
        } else if (optind == argc)
                add_words(set, default_codes);
        run->flags = calloc(N_CODES, sizeof *run->flags);
        run->ids = calloc(N_CODES, sizeof *run->ids);
        if (!run->flags || !run->ids)
                return ctl_error(ctl, -ENOMEM, "flags");
        for (int i = 0; i < N_CODES && run->n < run->limit; i++)
                if (set[i]) {
                        run->flags[run->n].cc[0] = (char) ('A' + i / 26);
                        run->flags[run->n].cc[1] = (char) ('A' + i % 26);
                        run->n++;
                }
        run->concurrency = (unsigned) MIN(MIN(run->max_req, (unsigned long) MAX_CONCUR_REQ),
                                          run->n);
        return 0;
}

/* Step 3: the server's base URL from --server, unless --base-url named one (then CUSTOM,
 * unless it is one of the known ones). */
static void pick_server(FlagsRun *run) {
        if (!run->base)
                for (size_t i = 0; i < ELEMENTSOF(servers); i++)
                        if (strcmp(run->label, servers[i][0]) == 0)
                                run->base = servers[i][1];
        for (size_t i = 0; i < ELEMENTSOF(servers); i++)
                if (run->base == servers[i][1])
                        return;
        run->label = "CUSTOM";
}

/* Step 4: the destination directory, created if need be. Returns 0, or an exit status after
 * printing why. */
static int open_dest(FlagsRun *run) {
        if (mkdir(run->dest, 0755) < 0 && errno != EEXIST) {
                fprintf(stderr, "futurectl: flags: cannot create %s: %m\n", run->dest);
                return EXIT_JOB_FAILED;
        }
        run->dest_fd = open(run->dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (run->dest_fd < 0) {
                fprintf(stderr, "futurectl: flags: cannot open %s: %m\n", run->dest);
                return EXIT_JOB_FAILED;
        }
        return 0;
}

static void print_header(const FlagsRun *run) {
        printf("%s site: %s\n", run->label, run->base);
        printf("Searching for %zu flag%s: ", run->n, run->n == 1 ? "" : "s");
        if (run->n <= 10)
                for (size_t i = 0; i < run->n; i++)
                        printf("%s%s", i ? ", " : "", run->flags[i].cc);
        else
                printf("from %s to %s", run->flags[0].cc, run->flags[run->n - 1].cc);
        putchar('\n');
        if (run->concurrency == 1)
                puts("1 connection will be used.");
        else
                printf("%u concurrent connections will be used.\n", run->concurrency);
        fflush(stdout);
}

/* Step 5: one `download` job per flag, all in one batch and in one group per run, whose limit
 * is this run's concurrency whoever else is running; the clock starts. Returns 0 or a negative
 * errno. */
static int submit_flags(Ctl *ctl, FlagsRun *run) {
        _cleanup_free_ futured_job *jobs = calloc(run->n, sizeof *jobs);
        char group[PROTO_MAX_GROUP];
        int r;

        if (!jobs)
                return -ENOMEM;
        snprintf(group, sizeof group, "flags-%d-%ld", (int) getpid(), (long) time(NULL));
        for (size_t i = 0; i < run->n; i++) {
                const char *cc = run->flags[i].cc;
                char url[4096], lower[3] = { (char) tolower(cc[0]), (char) tolower(cc[1]), 0 };
                msgpack_sbuffer sb;
                msgpack_packer pk;

                snprintf(url, sizeof url, "%s/%s/%s.gif", run->base, lower, lower);
                msgpack_sbuffer_init(&sb);
                msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
                msgpack_pack_map(&pk, 1);
                proto_pack_str(&pk, "url");
                proto_pack_str(&pk, url);
                jobs[i] = (futured_job){ .kind = "download", .args_len = sb.size, .group = group,
                                         .group_limit = run->concurrency };
                jobs[i].args = msgpack_sbuffer_release(&sb);
        }
        run->start = now_seconds();
        r = run->n ? futured_submit(ctl->c, jobs, run->n, run->ids) : 0;
        for (size_t i = 0; i < run->n; i++)
                free((void *) jobs[i].args);
        if (r < 0)
                return r;
        for (size_t i = 0; i < run->n; i++)
                run->flags[i].id = run->ids[i];
        return 0;
}

/* Step 6: takes the results in completion order, every flag finished by then in one round trip,
 * saves each flag and counts its outcome, with a progress bar on a terminal or a line a flag
 * with --verbose; stops early at Ctrl-C (run->stopped). Returns 0 or a negative errno. */
static int collect_flags(Ctl *ctl, FlagsRun *run) {
        _cleanup_(futured_as_completed_freep) futured_as_completed *it = NULL;
        bool show_bar = !run->verbose && !ctl->json && isatty(STDERR_FILENO);
        size_t finished = 0;
        Progress bar;
        int r = 0;

        if (run->n)
                r = futured_as_completed_new(ctl->c, run->ids, run->n, -1, &it);
        if (show_bar)
                progress_start(&bar, stderr, run->n);
        while (r >= 0 && finished < run->n && !ctl_interrupted()) {
                futured_id done[FETCH_BATCH];
                futured_outcome outs[FETCH_BATCH];
                int k;

                r = k = futured_as_completed_take(it, done, ELEMENTSOF(done));
                if (r <= 0)
                        break;
                r = futured_results(ctl->c, done, (size_t) k, 0, outs);
                if (r < 0)
                        break;
                for (int j = 0; j < k; j++) {
                        Flag *f = flag_of(run->flags, run->n, done[j]);
                        settle(f, &outs[j], run->dest_fd);
                        futured_outcome_clear(&outs[j]);
                        run->count[f->outcome]++;
                        finished++;
                        if (run->verbose && !ctl->json)
                                print_verbose(f);
                }
                if (show_bar)
                        progress_add(&bar, (size_t) k);
        }
        run->stopped = ctl_interrupted() || r == -EINTR;
        if (run->stopped || r >= 0) {
                if (show_bar)
                        progress_end(&bar);
                return 0;
        }
        if (show_bar)
                fputc('\n', stderr);
        return r;
}

/* Step 7: after Ctrl-C, cancels the downloads still outstanding; then the report. Returns the
 * exit status: 1 if some flag failed or the run was interrupted. */
static int report(Ctl *ctl, FlagsRun *run) {
        if (run->stopped)
                (void) futured_cancel(ctl->c, run->ids, run->n, NULL);
        if (ctl->json)
                print_json(run);
        else
                print_summary(run);
        return run->stopped || run->count[OUTCOME_ERROR] ? EXIT_JOB_FAILED : EXIT_SUCCESS;
}

static int parse_flags(Ctl *ctl, const CtlCommand *cmd, int argc, char **argv, void *args) {
        FlagsRun *run = args;
        int r;

        *run = (FlagsRun){
                .label = "LOCAL",
                .dest = "downloaded",
                .limit = N_CODES,
                .max_req = DEFAULT_CONCUR_REQ,
                .dest_fd = -1,
        };
        r = parse_options(ctl, argc, argv, run);
        if (r == 0 && !ctl->stop)
                r = pick_flags(ctl, argc, argv, run);
        if (r || ctl->stop)
                return r;
        pick_server(run);
        return 0;
}

static int run_flags(Ctl *ctl, const CtlCommand *cmd, void *args) {
        FlagsRun *run = args;
        int r;

        r = open_dest(run);
        if (r == 0)
                r = ctl_connect(ctl);
        if (r)
                return r;
        if (!ctl->json)
                print_header(run);
        ctl_catch_interrupts();
        r = submit_flags(ctl, run);
        if (r == 0)
                r = collect_flags(ctl, run);
        if (r < 0)
                return ctl_error(ctl, r, "flags");
        return report(ctl, run);
}

static void flags_clear_args(void *args) {
        flags_run_clear(args);
}

const CtlCommand flags_command = {
        .name = "flags",
        .args_size = sizeof(FlagsRun),
        .parse = parse_flags,
        .run = run_flags,
        .clear = flags_clear_args,
};
