/* future: see future.h. */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>

#include "alloc.h"
#include "future.h"
#include "pooljob.h"

int future_new(Future **ret, const JobKind *kind, uint8_t *args, uint32_t args_len) {
        Future *f = alloc_calloc(1, sizeof(*f));

        if (!f)
                return -ENOMEM;
        f->kind = kind;
        f->args = args;
        f->args_len = args_len;
        f->state = STATE_UNKNOWN; /* not counted until the executor queues it */
        *ret = f;
        return 0;
}

Future *future_free(Future *f) {
        if (!f)
                return NULL;
        assert(!f->heap_pos && !f->waiters && (!f->timeout || !f->timeout->timer.reserved));
        free(f->timeout);
        free(f->key);
        free(f->args);
        free(f->outcome);
        free(f);
        return NULL;
}

FutureState future_visible_state(const Future *f) {
        if (f->unseen_seq)
                return f->shown;
        if (f->state == STATE_RUNNING && f->kind->pool != POOL_PROCESS && f->runner.job &&
            !pooljob_started(f->runner.job))
                return STATE_PENDING;
        if ((f->cluster & FUTURE_STARTED) && f->state == STATE_PENDING)
                return STATE_RUNNING;
        return f->state;
}
