/* Unit test of the event loop with real fds: a registered fd's callback runs when it is ready,
 * timers fire in order from the one timerfd, the before-sleep hook runs once per turn after the
 * callbacks and can keep the loop from sleeping, and a file removed by another callback of the
 * same turn is not called. */
#include <sys/eventfd.h>
#include <unistd.h>

#include "loop.h"
#include "macro.h"
#include "test.h"

typedef struct Ctx {
        Loop *loop;
        LoopFile a, b;
        Timer t1, t2;
        int a_calls, b_calls, hook_calls, order;
        int t1_at, t2_at, hook_at;
        bool remove_b;
        int more_turns;
} Ctx;

static void on_a(LoopFile *lf, uint32_t events) {
        Ctx *c = container_of(lf, Ctx, a);
        uint64_t v;

        CHECK(events & EPOLLIN);
        (void) !read(lf->fd, &v, sizeof(v));
        c->a_calls++;
        if (c->remove_b)
                loop_remove(c->loop, &c->b);
}

static void on_b(LoopFile *lf, uint32_t events) {
        Ctx *c = container_of(lf, Ctx, b);
        uint64_t v;

        (void) !read(lf->fd, &v, sizeof(v));
        c->b_calls++;
        if (c->remove_b)
                loop_remove(c->loop, &c->a);
}

static void on_t1(Timer *t, uint64_t now) {
        Ctx *c = container_of(t, Ctx, t1);

        c->t1_at = ++c->order;
}

static void on_t2(Timer *t, uint64_t now) {
        Ctx *c = container_of(t, Ctx, t2);

        c->t2_at = ++c->order;
        loop_quit(c->loop);
}

static bool hook(void *userdata) {
        Ctx *c = userdata;

        c->hook_calls++;
        c->hook_at = ++c->order;
        return c->more_turns-- > 0;
}

int main(void) {
        Ctx c = {};
        uint64_t one = 1;
        int fa = eventfd(0, EFD_NONBLOCK), fb = eventfd(0, EFD_NONBLOCK);

        REQUIRE(fa >= 0 && fb >= 0);
        REQUIRE(loop_new(&c.loop) == 0);
        loop_set_hook(c.loop, hook, &c);
        REQUIRE(loop_add(c.loop, &c.a, fa, EPOLLIN, on_a) == 0);
        REQUIRE(loop_add(c.loop, &c.b, fb, EPOLLIN, on_b) == 0);

        /* A ready fd: its callback, then the hook, in one turn. */
        (void) !write(fa, &one, sizeof(one));
        REQUIRE(loop_turn(c.loop, 1000) == 0);
        CHECK(c.a_calls == 1 && c.b_calls == 0 && c.hook_calls == 1);

        /* Nothing ready and a zero timeout: only the hook. A hook asking for more makes the
         * next turn poll instead of waiting (this one would otherwise block for 10 s). */
        c.more_turns = 1;
        REQUIRE(loop_turn(c.loop, 0) == 0);
        REQUIRE(loop_turn(c.loop, 10000) == 0);
        CHECK(c.hook_calls == 3);

        /* Timers: t2 (later) is armed first; both fire in deadline order, before the hook. */
        REQUIRE(timer_init(loop_timers(c.loop), &c.t1, on_t1) == 0);
        REQUIRE(timer_init(loop_timers(c.loop), &c.t2, on_t2) == 0);
        c.order = 0;
        timer_start(loop_timers(c.loop), &c.t2, timer_now() + 20000000);
        timer_start(loop_timers(c.loop), &c.t1, timer_now() + 10000000);
        REQUIRE(loop_run(c.loop) == 0); /* t2 quits */
        CHECK(c.t1_at > 0 && c.t1_at < c.t2_at);
        CHECK(c.hook_at > c.t2_at); /* the hook still ran in the turn that quit */

        /* Both fds ready; whichever runs first removes the other, which is then not called. */
        c.remove_b = true;
        (void) !write(fa, &one, sizeof(one));
        (void) !write(fb, &one, sizeof(one));
        c.a_calls = c.b_calls = 0;
        REQUIRE(loop_turn(c.loop, 1000) == 0);
        CHECK(c.a_calls + c.b_calls == 1);

        timer_deinit(loop_timers(c.loop), &c.t1);
        timer_deinit(loop_timers(c.loop), &c.t2);
        loop_remove(c.loop, &c.a);
        loop_remove(c.loop, &c.b);
        c.loop = loop_free(c.loop);
        close(fa);
        close(fb);
        return test_end();
}
