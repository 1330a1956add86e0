/* progress: see progress.h. */
#include <string.h>

#include "futurectl.h"
#include "now.h"
#include "progress.h"

#define BAR_WIDTH 25

static void format_clock(char *buf, size_t size, double seconds) {
        long s = seconds < 0 ? 0 : seconds > 359999 ? 359999 : (long) (seconds + 0.5);

        if (s >= 3600)
                snprintf(buf, size, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
        else
                snprintf(buf, size, "%02ld:%02ld", s / 60, s % 60);
}

static void draw(Progress *p, double now) {
        /* Eighths of a block, as tqdm draws partial cells. */
        static const char *const partial[] = { "", "▏", "▎", "▍", "▌", "▋", "▊", "▉" };
        double frac = p->total ? (double) p->done / (double) p->total : 1.0;
        double elapsed = now - p->start, rate = elapsed > 0 ? (double) p->done / elapsed : 0;
        int eighths = (int) (frac * BAR_WIDTH * 8), cells = eighths / 8;
        char el[48], rem[48];

        format_clock(el, sizeof el, elapsed);
        if (rate > 0)
                format_clock(rem, sizeof rem, (double) (p->total - p->done) / rate);
        else
                strcpy(rem, "?");
        fprintf(p->f, "\r%3.0f%%|", frac * 100);
        for (int i = 0; i < cells; i++)
                fputs("█", p->f);
        if (cells < BAR_WIDTH) {
                fputs(partial[eighths % 8], p->f);
                for (int i = cells + (eighths % 8 ? 1 : 0); i < BAR_WIDTH; i++)
                        fputc(' ', p->f);
        }
        fprintf(p->f, "| %zu/%zu [%s<%s, %.2fit/s]", p->done, p->total, el, rem, rate);
        fflush(p->f);
        p->last_draw = now;
}

void progress_start(Progress *p, FILE *f, size_t total) {
        *p = (Progress){ .f = f, .total = total, .start = now_seconds() };
        draw(p, p->start);
}

void progress_add(Progress *p, size_t n) {
        double now = now_seconds();

        p->done += n;
        if (now - p->last_draw >= 0.1 || p->done == p->total)
                draw(p, now);
}

void progress_end(Progress *p) {
        draw(p, now_seconds());
        fputc('\n', p->f);
}
