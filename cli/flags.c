/* flags: `futurectl flags`, the classic flag downloader through the daemon. */
#include <stdio.h>

#include "futurectl.h"

int cmd_flags(Ctl *ctl, int argc, char **argv) {
        fputs("futurectl: flags: not yet available\n", stderr);
        return EXIT_USAGE;
}
