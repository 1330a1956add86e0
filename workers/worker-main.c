/* futured-worker: one process of the process pool.
 *
 * Started by futured with its end of a SOCK_SEQPACKET socketpair as fd 3. It says hello, then
 * loops: read a job frame, run the job kind, send the reply frame. It exits when the socket
 * closes (the daemon retired it or went away) and asks the kernel to kill it if the daemon dies,
 * so no orphan keeps computing. Cancellation is the daemon's SIGKILL: jobs here need no cancel
 * checks. It links only the jobs library, with a table of the kinds it may run: no libcurl, no
 * pools. Single-threaded. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "frame.h"
#include "kind.h"
#include "prime.h"

static int arg_fd = 3;
static pid_t arg_parent;

/* The kinds a worker may run: those with a run(). A transfer kind (download) is not a worker's
 * to run, and leaving it out keeps libcurl out of this process. */
static const JobKind *const worker_kinds[] = {
        &prime_kind,
        &sleep_kind,
        &noop_kind,
        NULL,
};

static int parse_argv(int argc, char **argv) {
        static const struct option options[] = {
                { "fd", required_argument, NULL, 'f' },
                { "parent", required_argument, NULL, 'p' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'f':
                        arg_fd = atoi(optarg);
                        break;
                case 'p':
                        arg_parent = (pid_t) atoi(optarg);
                        break;
                case 'h':
                        printf("Usage: %s [--fd N] [--parent PID]\n\n"
                               "A process-pool worker of futured. futured starts it; it is not\n"
                               "meant to be run by hand.\n",
                               argv[0]);
                        exit(EXIT_SUCCESS);
                case 'V':
                        printf("futured-worker %s\n", FUTURED_VERSION);
                        exit(EXIT_SUCCESS);
                default:
                        return -EINVAL;
                }
        return 0;
}

static int send_sbuf(const msgpack_sbuffer *sbuf) {
        if (sbuf->size > FRAME_MAX)
                return -EMSGSIZE;
        if (send(arg_fd, sbuf->data, sbuf->size, MSG_NOSIGNAL) < 0)
                return -errno;
        return 0;
}

static int send_hello(void) {
        msgpack_sbuffer sbuf;
        msgpack_packer pk;
        int r;

        msgpack_sbuffer_init(&sbuf);
        msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 1);
        proto_pack_str(&pk, "hello");
        msgpack_pack_uint64(&pk, (uint64_t) getpid());
        msgpack_pack_map(&pk, 0);
        r = send_sbuf(&sbuf);
        msgpack_sbuffer_destroy(&sbuf);
        return r;
}

/* Runs one job frame and sends its reply. Returns 0, or <0 when the daemon must not be talked to
 * any more (a malformed job frame means the daemon and worker disagree: exit). */
static int run_job(const uint8_t *buf, size_t len) {
        static const atomic_int never = 0;
        const JobContext ctx = { .cancel = &never };
        msgpack_unpacked args;
        msgpack_sbuffer sbuf;
        msgpack_packer pk;
        msgpack_sbuffer result;
        msgpack_packer rpk;
        JobFailure failure = {};
        const JobKind *kind;
        FrameHeader h;
        int r;

        if (frame_parse(buf, len, &h) < 0 || h.job == 0)
                return -EBADMSG;
        kind = kind_lookup(worker_kinds, h.kind, strlen(h.kind));

        msgpack_unpacked_init(&args);
        msgpack_sbuffer_init(&sbuf);
        msgpack_sbuffer_init(&result);
        msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
        msgpack_packer_init(&rpk, &result, msgpack_sbuffer_write);
        if (msgpack_unpack_next(&args, (const char *) h.payload, h.payload_len, NULL) !=
            MSGPACK_UNPACK_SUCCESS)
                r = job_failure(&failure, PROTO_F_INTERNAL, "worker could not decode the arguments");
        else if (!kind || !kind->run) /* unknown here: a transfer kind is not a worker's to run */
                r = job_failure(&failure, PROTO_F_INTERNAL, "worker does not run kind '%s'",
                                h.kind);
        else
                r = kind->run(&args.data, &ctx, &rpk, &failure);

        frame_pack_reply_header(&pk, h.job, r >= 0);
        if (r >= 0)
                msgpack_sbuffer_write(&sbuf, result.data, result.size);
        else
                frame_pack_failure(&pk, &failure);
        r = send_sbuf(&sbuf);
        if (r == -EMSGSIZE) {
                sbuf.size = 0;
                frame_pack_reply_header(&pk, h.job, false);
                job_failure(&failure, PROTO_F_INTERNAL, "result too large for the worker frame");
                frame_pack_failure(&pk, &failure);
                r = send_sbuf(&sbuf);
        }
        msgpack_sbuffer_destroy(&result);
        msgpack_sbuffer_destroy(&sbuf);
        msgpack_unpacked_destroy(&args);
        return r;
}

int main(int argc, char **argv) {
        uint8_t *buf;

        if (parse_argv(argc, argv) < 0)
                return 2;
        /* Die with the daemon. The check after prctl closes the race where it died first. */
        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (arg_parent > 0 && getppid() != arg_parent)
                return 0;
        /* The daemon decides when a job ends: a stop of the service signals the whole cgroup
         * (without KillMode=mixed) or a terminal's Ctrl-C reaches the process group, and either
         * would kill a job the daemon's --grace lets finish. A cancel is SIGKILL. */
        signal(SIGTERM, SIG_IGN);
        signal(SIGINT, SIG_IGN);
        /* Under memory pressure the kernel should kill a runaway job, not the daemon. Raising
         * one's own score needs no privilege; failing (no /proc) changes nothing else. */
        int oom = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
        if (oom >= 0) {
                (void) !write(oom, "500", 3);
                close(oom);
        }

        buf = malloc(FRAME_MAX + 1);
        if (!buf || send_hello() < 0)
                return 1;
        for (;;) {
                ssize_t n = recv(arg_fd, buf, FRAME_MAX + 1, MSG_TRUNC);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break; /* the daemon closed the socket: we are done */
                if ((size_t) n > FRAME_MAX || run_job(buf, (size_t) n) < 0) {
                        fprintf(stderr, "futured-worker: bad frame from the daemon; exiting\n");
                        free(buf);
                        return 1;
                }
        }
        free(buf);
        return 0;
}
