/* future: see future.h. */
#include <assert.h>
#include <stdlib.h>

#include "future.h"

Future *future_new(uint64_t id, const JobKind *kind, uint8_t *args, uint32_t args_len) {
        Future *f = calloc(1, sizeof(*f));

        if (!f)
                return NULL;
        f->id = id;
        f->kind = kind;
        f->args = args;
        f->args_len = args_len;
        f->state = STATE_PENDING;
        return f;
}

Future *future_free(Future *f) {
        if (!f)
                return NULL;
        assert(!f->heap_pos && !f->waiters && !timer_armed(&f->timeout));
        free(f->args);
        free(f->outcome);
        free(f);
        return NULL;
}

void future_finish(Future *f, FutureState state, uint8_t *outcome, uint32_t outcome_len) {
        assert(proto_state_final(state));
        free(f->args);
        f->args = NULL;
        f->args_len = 0;
        free(f->outcome);
        f->outcome = outcome;
        f->outcome_len = outcome_len;
        f->state = state;
        f->runner = NULL;
}
