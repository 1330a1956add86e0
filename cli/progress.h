/* progress: a tqdm-style progress bar on a terminal stream:
 *    45%|███████████▎             | 304/676 [00:01<00:01, 250.12it/s]
 * Redrawn in place at most ten times a second, and always at the end. One thread. */
#pragma once

#include <stdbool.h>
#include <stdio.h>

typedef struct Progress {
        FILE *f; /* borrowed */
        size_t total, done;
        double start, last_draw;
} Progress;

void progress_start(Progress *p, FILE *f, size_t total);
/* Counts `n` more finished items and redraws if due. */
void progress_add(Progress *p, size_t n);
/* Draws the final state and ends the line. */
void progress_end(Progress *p);
