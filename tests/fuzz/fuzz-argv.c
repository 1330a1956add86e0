/* fuzz-argv: futurectl's argument parsing. The input is a command line after the program name:
 * arguments each ended by a NUL (a last one without its NUL counts too), at most 64 of them. It
 * goes through ctl_parse() alone, the whole of futurectl's parsing (global options, the command,
 * its options and arguments), and ctl_invocation_clear(); ctl_run() never runs, so no daemon, file
 * or signal is touched. Help and usage texts go to stdout and stderr: run the fuzzer with
 * -close_fd_mask=3 (the scripts do) to keep them out of its log. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "futurectl.h"

#define MAX_ARGS 64
#define MAX_INPUT 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *argv[MAX_ARGS + 2], *buf, *end;
        CtlInvocation inv;
        int argc = 0;

        if (size > MAX_INPUT)
                return 0;
        buf = malloc(size + 1);
        if (!buf)
                return 0;
        memcpy(buf, data, size);
        buf[size] = 0;
        end = buf + size;
        argv[argc++] = (char *) "futurectl";
        for (char *p = buf; p < end && argc <= MAX_ARGS; p += strlen(p) + 1)
                argv[argc++] = p;
        argv[argc] = NULL;
        (void) ctl_parse(&inv, argc, argv);
        ctl_invocation_clear(&inv);
        free(buf);
        return 0;
}
