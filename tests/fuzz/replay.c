/* Replays fuzz inputs through a fuzz target's LLVMFuzzerTestOneInput() without libFuzzer, so the
 * normal test suite (any compiler) runs the seed corpus and every kept regression input. Each
 * argument is a file or a directory of files. Exits non-zero when an argument cannot be read; a
 * crash is the target's own abort(), or a sanitizer's report. */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int replay_file(const char *path) {
        FILE *f = fopen(path, "rb");
        uint8_t *buf = NULL;
        long size;

        if (!f || fseek(f, 0, SEEK_END) < 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) < 0 ||
            !(buf = malloc((size_t) size + 1)) || fread(buf, 1, (size_t) size, f) != (size_t) size) {
                fprintf(stderr, "replay: cannot read %s\n", path);
                if (f)
                        fclose(f);
                free(buf);
                return -1;
        }
        fclose(f);
        LLVMFuzzerTestOneInput(buf, (size_t) size);
        free(buf);
        return 1;
}

static int replay(const char *path) {
        struct dirent **names;
        struct stat st;
        int n, total = 0;

        if (stat(path, &st) < 0) {
                fprintf(stderr, "replay: %s: %m\n", path);
                return -1;
        }
        if (!S_ISDIR(st.st_mode))
                return replay_file(path);
        n = scandir(path, &names, NULL, alphasort);
        if (n < 0)
                return -1;
        for (int i = 0; i < n; i++) {
                char *sub;
                if (names[i]->d_name[0] != '.' && asprintf(&sub, "%s/%s", path, names[i]->d_name) >= 0) {
                        int r = replay(sub);
                        total = r < 0 || total < 0 ? -1 : total + r;
                        free(sub);
                }
                free(names[i]);
        }
        free(names);
        return total;
}

int main(int argc, char **argv) {
        int total = 0;

        if (LLVMFuzzerInitialize)
                LLVMFuzzerInitialize(&argc, &argv);
        for (int i = 1; i < argc; i++) {
                int r = replay(argv[i]);
                if (r < 0)
                        return EXIT_FAILURE;
                total += r;
        }
        printf("replayed %d inputs\n", total);
        return EXIT_SUCCESS;
}
