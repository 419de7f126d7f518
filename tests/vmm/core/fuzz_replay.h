/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Without libFuzzer (QTVMM_FUZZER undefined) a fuzz target becomes a program
 * that feeds every file of the directories given to LLVMFuzzerTestOneInput:
 * the corpus replays as a unit test in every build, ASan included.
 */
#ifndef QT_TEST_FUZZ_REPLAY_H
#define QT_TEST_FUZZ_REPLAY_H

#ifndef QTVMM_FUZZER
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fuzz_replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long len;

    if (!f)
        return -1;
    if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)len + 1)) && fread(buf, 1, (size_t)len, f) == (size_t)len) {
        fclose(f);
        LLVMFuzzerTestOneInput(buf, (size_t)len);
        free(buf);
        return 0;
    }
    free(buf);
    fclose(f);
    return -1;
}

int main(int argc, char **argv)
{
    int n = 0;

    for (int i = 1; i < argc; i++) {
        DIR *d = opendir(argv[i]);
        struct dirent *e;
        char path[4096];

        if (!d) {
            if (fuzz_replay_file(argv[i]) < 0) {
                fprintf(stderr, "%s: cannot read\n", argv[i]);
                return 1;
            }
            n++;
            continue;
        }
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            snprintf(path, sizeof(path), "%s/%s", argv[i], e->d_name);
            if (fuzz_replay_file(path) < 0) {
                fprintf(stderr, "%s: cannot read\n", path);
                closedir(d);
                return 1;
            }
            n++;
        }
        closedir(d);
    }
    printf("replayed %d inputs\n", n);
    return n > 0 ? 0 : 1;
}
#endif

#endif
