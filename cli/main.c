/* futurectl's main(): parse the command line, run it. Everything else is in the ctl library
 * (futurectl.c and the command files), which the fuzz target tests/fuzz/fuzz-argv.c links too. */
#include "futurectl.h"

int main(int argc, char **argv) {
        CtlInvocation inv;
        int r;

        r = ctl_parse(&inv, argc, argv);
        if (r == 0)
                r = ctl_run(&inv);
        ctl_invocation_clear(&inv);
        return r;
}
