/* A complete libfutured program: checks the numbers on its command line for primality in
 * futured's process pool and prints each as it finishes (as concurrent.futures.as_completed).
 *
 *   cc primes.c $(pkg-config --cflags --libs futured msgpack) -o primes
 *   ./primes 2 9999999999999917 18446744073709551557
 */
#include <errno.h>
#include <futured/client.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
        size_t n = (size_t) argc - 1;
        futured_job *jobs = calloc(n ? n : 1, sizeof *jobs);
        futured_id *ids = calloc(n ? n : 1, sizeof *ids);
        void **args = calloc(n ? n : 1, sizeof *args);
        futured_as_completed *it = NULL;
        futured *c;
        futured_id id;
        int r;

        if (!jobs || !ids || !args)
                return 1;
        r = futured_connect(&c, NULL, 5.0); /* NULL: $FUTURED_ENDPOINT or the default */
        if (r < 0) {
                fprintf(stderr, "cannot reach futured: %s\n", strerror(-r));
                return 69;
        }
        for (size_t i = 0; i < n; i++) {
                /* "n=VALUE" would do as well; bare values follow the kind's parameter order. */
                r = futured_args_pack(c, "prime", &argv[i + 1], 1, &args[i], &jobs[i].args_len);
                if (r < 0) {
                        fprintf(stderr, "%s\n", futured_error_message(c));
                        n = i; /* free what was packed so far */
                        r = -EINVAL;
                        goto out;
                }
                jobs[i].kind = "prime";
                jobs[i].args = args[i];
        }
        if (n && (r = futured_submit(c, jobs, n, ids)) < 0) {
                fprintf(stderr, "submit: %s\n", futured_error_message(c));
                goto out;
        }
        r = futured_as_completed_new(c, ids, n, -1, &it);
        while (r >= 0 && (r = futured_as_completed_next(it, &id)) > 0) {
                futured_outcome out;
                msgpack_unpacked u;

                if (futured_result(c, id, 0, &out) < 0)
                        break;
                msgpack_unpacked_init(&u);
                if (out.state == FUTURED_DONE &&
                    msgpack_unpack_next(&u, out.result, out.result_len, NULL) == MSGPACK_UNPACK_SUCCESS) {
                        printf("future %llu: ", (unsigned long long) id);
                        msgpack_object_print(stdout, u.data);
                        putchar('\n');
                } else
                        printf("future %llu: %s\n", (unsigned long long) id,
                               futured_state_name(out.state));
                msgpack_unpacked_destroy(&u);
                futured_outcome_clear(&out);
        }
out:
        futured_as_completed_free(it);
        for (size_t i = 0; i < n; i++)
                free(args[i]);
        free(args);
        free(jobs);
        free(ids);
        futured_free(c);
        return r == -EINVAL ? 2 : r < 0 ? 1 : 0;
}
